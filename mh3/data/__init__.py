"""mh3.data (see DESIGN.md layout)."""
