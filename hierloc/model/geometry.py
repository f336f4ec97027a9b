"""The two geometries a model can use: Lorentz (the paper's) and Euclidean (ablation).

Both expose the same small interface over tangent vectors at the origin (..., d):
``to_point`` (tangent -> point), ``tangent`` (point -> tangent), ``sq_dist`` and
``sq_dist_matrix``. Lorentz points are (..., d+1) (time first, see manifold.lorentz);
Euclidean points are the tangent vectors themselves, (..., d).
"""

from __future__ import annotations

import torch

from hierloc.manifold import lorentz as L

GEOMETRIES = ("lorentz", "euclidean")


class Geometry:
    """Geometry with curvature K (a float, or a 0-d tensor when it is learned)."""

    def __init__(self, kind: str, K=1.0):
        if kind not in GEOMETRIES:
            raise ValueError(f"unknown geometry {kind!r}; expected one of {GEOMETRIES}")
        self.kind = kind
        self.K = K

    @property
    def point_dim_extra(self) -> int:
        return 1 if self.kind == "lorentz" else 0

    def to_point(self, v: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d + extra), in float32 at least (manifold math is not half)."""
        v = _full_precision(v)
        return L.exp0(v, self.K) if self.kind == "lorentz" else v

    def tangent(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d + extra) -> (..., d)."""
        return L.log0(x, self.K) if self.kind == "lorentz" else x

    def sq_dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Element-wise squared distance: (..., p) x2 -> (...)."""
        if self.kind == "lorentz":
            return L.dist(x, y, self.K) ** 2
        return ((x - y) ** 2).sum(-1)

    def sq_dist_to_gathered(self, x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """sq_dist(x[:, None], ys) with the very same arithmetic, reusing ys's memory for the
        differences (ys is overwritten): (B, p), (B, W, p) -> (B, W)."""
        diff = torch.sub(x[:, None, :], ys, out=ys)  # (B, W, p)
        if self.kind == "lorentz":
            return L.dist_from_diff(diff, self.K, inplace=True) ** 2
        return diff.pow_(2).sum(-1)

    def sq_dist_matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """All pairs: (B, p), (N, p) -> (B, N)."""
        if self.kind == "lorentz":
            return L.sq_dist_matrix(x, y, self.K)
        sq = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1)[None, :] - 2.0 * x @ y.T  # (B, N)
        return sq.clamp_min(0.0)

    def norm_from_origin(self, x: torch.Tensor) -> torch.Tensor:
        """Distance from the origin: (..., p) -> (...)."""
        return L.dist0(x, self.K) if self.kind == "lorentz" else x.norm(dim=-1)


def _full_precision(v: torch.Tensor) -> torch.Tensor:
    return v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
