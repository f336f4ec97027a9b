"""Figures: the folium map and the Poincare disk (plotly). Built as objects, tested without the UI."""

LEVEL_COLORS = {"country": "#2563eb", "region": "#16a34a", "sub-region": "#ea580c", "city": "#dc2626"}
"""One colour per level, everywhere: breadcrumb, map outlines, disk points."""
PHOTO_COLOR = "#a21caf"
TRUTH_COLOR = "#0f172a"
