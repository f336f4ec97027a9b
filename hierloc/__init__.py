"""HierLoc: hierarchical visual geolocation in hyperbolic space.

Nothing is loaded at import time: no weights, no data, no network.
"""

__version__ = "0.1.0"

LEVELS = ("country", "region", "sub-region", "city")
"""The four levels of the place hierarchy, coarse to fine (OSV-5M's names)."""
