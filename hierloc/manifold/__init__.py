"""Hyperbolic geometry as pure functions (see lorentz.py for the one convention)."""

from hierloc.manifold import lorentz

__all__ = ["lorentz"]
