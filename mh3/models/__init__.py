"""mh3.models (see DESIGN.md layout)."""
