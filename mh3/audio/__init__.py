"""mh3.audio (see DESIGN.md layout)."""
