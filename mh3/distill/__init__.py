"""mh3.distill (see DESIGN.md layout)."""
