"""Lorentz (hyperboloid) model: pure functions, curvature as an argument.

Convention, fixed here once for the whole project
-------------------------------------------------
- Curvature is -1/K with K > 0 (the paper's K; K = 1 by default). R = sqrt(K).
- A point of the d-dimensional hyperbolic space is stored as a (d+1)-vector
  x = (x_0, x_1..x_d), time coordinate FIRST, on the upper sheet
  <x, x>_L = -x_0^2 + |x_space|^2 = -K, x_0 > 0.
- The origin is o = (R, 0, ..., 0). Tangent vectors at the origin have x_0 = 0 and are
  passed around as their d space coordinates only: shape (..., d).
- geoopt: Lorentz(k=K) is this manifold; PoincareBall(c=1/K) is its Poincare ball, of
  radius R (see :func:`geoopt_manifolds`). Mind the trap: geoopt's Lorentz takes K,
  its PoincareBall takes the curvature's absolute value 1/K.
- The isometry to the Poincare ball of radius R is p = R x_space / (x_0 + R); for
  K = 1 it is the familiar x_space / (x_0 + 1).

Every function documents its shapes. Manifold math should run in float32 or float64,
never in half precision (callers disable autocast around it).
"""

from __future__ import annotations

import torch

# Smallest tangent / space norm treated as non-zero: below it, sinh(n)/n and
# asinh(n)/n are replaced by their limit 1 through the clamp (no 0/0).
MIN_NORM = 1e-15
# Largest |v|/R fed to cosh/sinh: at 15, x_0 ~ 1.6e6 R and products of two time
# coordinates (inner products, distance matrices) stay far from float32's limit (3.4e38).
MAX_TANGENT_RATIO = 15.0
# Floor under squared Lorentz norms before sqrt, so gradients stay finite at d = 0.
MIN_SQ = 1e-30


def _radius(K) -> torch.Tensor | float:
    return K ** 0.5


def inner(x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Lorentz inner product <x, y>_L = -x_0 y_0 + <x_s, y_s>: (..., d+1) x2 -> (...)."""
    prod = x * y
    out = prod[..., 1:].sum(-1) - prod[..., 0]
    return out.unsqueeze(-1) if keepdim else out


def origin(d: int, K=1.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """The origin (R, 0, ..., 0): () -> (d+1,)."""
    o = torch.zeros(d + 1, dtype=dtype, device=device)
    o[0] = _radius(K)
    return o


def exp0(v: torch.Tensor, K=1.0) -> torch.Tensor:
    """Exponential map at the origin: tangent (..., d) -> point (..., d+1).

    exp_0(v) = (R cosh(|v|/R), R sinh(|v|/R) v/|v|).
    """
    R = _radius(K)
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(MIN_NORM)  # (..., 1)
    r = (norm / R).clamp_max(MAX_TANGENT_RATIO)
    time = R * torch.cosh(r)
    space = (R * torch.sinh(r) / norm) * v
    return torch.cat([time, space], dim=-1)


def log0(x: torch.Tensor, K=1.0) -> torch.Tensor:
    """Logarithmic map at the origin: point (..., d+1) -> tangent (..., d).

    log_0(x) = R arcosh(x_0/R) x_s/|x_s|, computed as R asinh(|x_s|/R) x_s/|x_s|,
    which is the same on the hyperboloid and well conditioned near the origin.
    """
    R = _radius(K)
    space = x[..., 1:]
    norm = torch.linalg.vector_norm(space, dim=-1, keepdim=True).clamp_min(MIN_NORM)  # (..., 1)
    return (R * torch.asinh(norm / R) / norm) * space


def project(x: torch.Tensor, K=1.0) -> torch.Tensor:
    """Put a point back on the hyperboloid by recomputing its time coordinate: (..., d+1)."""
    space = x[..., 1:]
    time = torch.sqrt(K + (space * space).sum(-1, keepdim=True))
    return torch.cat([time, space], dim=-1)


def dist(x: torch.Tensor, y: torch.Tensor, K=1.0) -> torch.Tensor:
    """Geodesic distance, element-wise: (..., d+1) x2 -> (...).

    d = R arcosh(-<x, y>_L / K) = 2R asinh( sqrt(<x-y, x-y>_L / (4K)) ); the second
    form differences the points first, so d(x, x) is exactly 0 and small distances keep
    their digits.
    """
    return dist_from_diff(x - y, K)


def dist_from_diff(diff: torch.Tensor, K=1.0, inplace: bool = False) -> torch.Tensor:
    """Geodesic distance from the difference x - y of two points: (..., d+1) -> (...).
    inplace squares diff in its own memory (the caller's tensor is overwritten)."""
    R = _radius(K)
    prod = diff.mul_(diff) if inplace else diff * diff
    sq = (prod[..., 1:].sum(-1) - prod[..., 0]).clamp_min(MIN_SQ)  # <diff, diff>_L >= 0, up to rounding
    return 2.0 * R * torch.asinh(torch.sqrt(sq / (4.0 * K)))


def sq_dist_matrix(x: torch.Tensor, y: torch.Tensor, K=1.0) -> torch.Tensor:
    """Squared geodesic distances between all pairs: (B1, d+1), (B2, d+1) -> (B1, B2).

    One matrix product: -<x, y>_L = x_0 y_0 - x_s . y_s (the inner product with the
    time sign flipped).
    """
    R = _radius(K)
    neg_inner = torch.outer(x[:, 0], y[:, 0]) - x[:, 1:] @ y[:, 1:].T  # (B1, B2)
    # arcosh needs >= 1; rounding in float32 puts near-equal points just below it. The
    # margin keeps arcosh's slope (1/sqrt(z^2-1)) finite.
    z = (neg_inner / K).clamp_min(1.0 + _acosh_margin(x.dtype))
    return (R * torch.acosh(z)) ** 2


def dist_matrix(x: torch.Tensor, y: torch.Tensor, K=1.0) -> torch.Tensor:
    """Geodesic distances between all pairs: (B1, d+1), (B2, d+1) -> (B1, B2)."""
    return sq_dist_matrix(x, y, K).sqrt()


def _acosh_margin(dtype: torch.dtype) -> float:
    return 1e-7 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-15


def dist0(x: torch.Tensor, K=1.0) -> torch.Tensor:
    """Distance from the origin: (..., d+1) -> (...). Equals |log_0(x)|."""
    R = _radius(K)
    return R * torch.asinh(torch.linalg.vector_norm(x[..., 1:], dim=-1) / R)


def to_poincare(x: torch.Tensor, K=1.0) -> torch.Tensor:
    """Lorentz -> Poincare ball of radius R: (..., d+1) -> (..., d). p = R x_s/(x_0 + R)."""
    R = _radius(K)
    return R * x[..., 1:] / (x[..., :1] + R)


def from_poincare(p: torch.Tensor, K=1.0) -> torch.Tensor:
    """Poincare ball of radius R -> Lorentz: (..., d) -> (..., d+1).

    x = (R (K + |p|^2), 2K p) / (K - |p|^2).
    """
    R = _radius(K)
    sq = (p * p).sum(-1, keepdim=True)
    # Points on or outside the rim have no preimage: keep them a hair inside.
    denom = (K - sq).clamp_min(MIN_NORM)
    return torch.cat([R * (K + sq) / denom, 2.0 * K * p / denom], dim=-1)


def poincare_dist(p: torch.Tensor, q: torch.Tensor, K=1.0) -> torch.Tensor:
    """Distance in the Poincare ball of radius R: (..., d) x2 -> (...)."""
    R = _radius(K)
    sq_diff = ((p - q) ** 2).sum(-1)
    denom = ((K - (p * p).sum(-1)) * (K - (q * q).sum(-1))).clamp_min(MIN_SQ)
    return R * torch.acosh(1.0 + 2.0 * K * sq_diff / denom)


def geoopt_manifolds(K=1.0, learnable: bool = False):
    """This project's curvature K -> (geoopt.Lorentz(k=K), geoopt.PoincareBall(c=1/K))."""
    import geoopt

    return geoopt.Lorentz(k=float(K), learnable=learnable), geoopt.PoincareBall(c=1.0 / float(K), learnable=learnable)
