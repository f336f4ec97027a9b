"""Great-circle distance: the project's only haversine.

Coordinates are always (lat_deg, lon_deg), in degrees, in that order.
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0
"""Mean Earth radius, the value the OSV-5M benchmark uses."""


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg):
    """Great-circle distance in km between points given in degrees.

    Works element-wise with broadcasting on numpy arrays, python floats or torch
    tensors (all four of the same family); torch keeps gradients and device.
    Shapes: any broadcastable shapes -> the broadcast shape.
    """
    try:
        import torch

        is_torch = isinstance(lat1_deg, torch.Tensor)
    except ImportError:  # pragma: no cover - torch is a dependency
        is_torch = False
    if is_torch:
        xp, to_rad, atan2 = torch, torch.deg2rad, torch.atan2
        clamp = lambda v, lo, hi: torch.clamp(v, lo, hi)  # noqa: E731
    else:
        xp, to_rad = np, np.radians
        lat1_deg, lon1_deg, lat2_deg, lon2_deg = (
            np.asarray(v, dtype=np.float64) for v in (lat1_deg, lon1_deg, lat2_deg, lon2_deg)
        )
        atan2 = np.arctan2
        clamp = np.clip
    lat1, lon1, lat2, lon2 = (to_rad(v) for v in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    a = xp.sin((lat2 - lat1) / 2) ** 2 + xp.cos(lat1) * xp.cos(lat2) * xp.sin((lon2 - lon1) / 2) ** 2
    # Rounding can push a a hair outside [0, 1]: clamp so sqrt never sees a negative.
    a = clamp(a, 0.0, 1.0)
    # atan2 instead of asin(sqrt(a)): exact to the last digit near the antipodes, where
    # asin's slope is infinite. The floor on 1 - a keeps the gradient of sqrt finite
    # there; it moves no distance by more than 1e-9 km. Near the antipodes the result is
    # good to about 1 m (the rounding of a itself in float64).
    return 2.0 * EARTH_RADIUS_KM * atan2(xp.sqrt(a), xp.sqrt(clamp(1.0 - a, _ONE_MINUS_A_FLOOR, 1.0)))


_ONE_MINUS_A_FLOOR = 1e-30


def haversine_matrix_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg):
    """Pairwise distances: (N,), (N,), (M,), (M,) -> (N, M) km (numpy or torch)."""
    return haversine_km(lat1_deg[:, None], lon1_deg[:, None], lat2_deg[None, :], lon2_deg[None, :])


def unit_vectors(lat_deg, lon_deg) -> np.ndarray:
    """(N,), (N,) degrees -> (N, 3) points on the unit sphere, for KD-trees on chords."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def chord_to_km(chord):
    """Chord length on the unit sphere -> great-circle km (inverse of the KD-tree metric)."""
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0))


__all__ = ["EARTH_RADIUS_KM", "haversine_km", "haversine_matrix_km", "unit_vectors", "chord_to_km"]
