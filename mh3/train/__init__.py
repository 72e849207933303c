"""mh3.train (see DESIGN.md layout)."""
