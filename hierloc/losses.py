"""GWH-InfoNCE: the geo-weighted hyperbolic contrastive loss (METHOD.md section 2).

For one level, a photo z with true place h+ and every other place h_k of the level:

    d+ = d(z, h+)^2,  d_k = d(z, h_k)^2,  g_k = haversine_km(photo, centroid_k)
    w_k = 1 + lambda * kernel(g_k / sigma)           (near wrong places weigh more)
    L = -log( e^{-d+/tau} / (e^{-d+/tau} + sum_k w_k e^{-d_k/tau}) )

kernel: laplace exp(-x), gaussian exp(-x^2), or none (w_k = 1). tau, lambda and sigma
are learned (positive through a log); lambda_init = 0 turns geo-weighting off and
keeps it off (the ablation). The total is sum_l beta_l L_l.

Negatives span the whole level, processed in chunks under activation checkpointing, so
memory grows with the chunk, not with the level: (B, chunk) floats at a time.

Sampled negatives (training on a CPU, where a full city level per step is too slow): a
level may be given as a sample of its places with a log weight per place (``log_w``);
the sum over negatives becomes sum_k w_k' e^{logit_k} with w_k' = exp(log_w_k), which
is an unbiased estimate of the full sum when log_w is minus the log of each place's
probability of being in the sample (see hierloc.train.loop.NegativeSampler).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hierloc.geo.distance import EARTH_RADIUS_KM

KERNELS = ("laplace", "gaussian", "none")
CHECKPOINT_ABOVE = 64 * 2**20
"""(photos x places) above which loss chunks are recomputed in backward (memory bound)."""
TAU_MIN = 1e-3
"""Lower clamp on tau: below it logits of squared distances overflow float32."""


class GeoWeightedLoss(nn.Module):
    def __init__(self, kernel: str = "laplace", tau_init: float = 0.5, lambda_init: float = 1.0,
                 sigma_init_km: float = 250.0, betas=(1.0, 1.0, 1.0, 1.0), chunk: int = 16384):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
        if tau_init <= 0 or sigma_init_km <= 0 or lambda_init < 0:
            raise ValueError("tau and sigma must be positive and lambda non-negative")
        self.kernel = kernel
        self.chunk = int(chunk)
        self.register_buffer("betas", torch.tensor(betas, dtype=torch.float32), persistent=False)
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau_init)))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init_km)))
        self.geo_weighting = kernel != "none" and lambda_init > 0
        if self.geo_weighting:
            self.log_lambda = nn.Parameter(torch.tensor(math.log(lambda_init)))
        else:
            self.register_buffer("log_lambda", torch.tensor(-math.inf), persistent=False)

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp_min(TAU_MIN)

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lambda.exp()

    @property
    def sigma_km(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def weights(self, dist_km: torch.Tensor) -> torch.Tensor:
        """w = 1 + lambda * kernel(g / sigma), same shape as dist_km."""
        if not self.geo_weighting:
            return torch.ones_like(dist_km)
        x = dist_km / self.sigma_km
        k = torch.exp(-x) if self.kernel == "laplace" else torch.exp(-x * x)
        return 1.0 + self.lam * k

    def level_loss(self, geometry, z: torch.Tensor, places: torch.Tensor, target: torch.Tensor,
                   photo_latlon: torch.Tensor, place_latlon: torch.Tensor,
                   log_w: torch.Tensor | None = None) -> torch.Tensor:
        """Per-photo loss at one level.

        z (B, p) photo points; places (N, p) the level's points; target (B,) long, the
        true place's index in the level; photo_latlon (B, 2) and place_latlon (N, 2) in
        degrees; log_w (N,) optional log weights of the negatives. Returns (B,).
        """
        tau = self.tau
        pos_logit = -geometry.sq_dist(z, places[target]) / tau  # (B,)
        photo_xyz, place_xyz = _unit_xyz(photo_latlon), _unit_xyz(place_latlon)  # (B, 3), (N, 3)
        # Checkpoint chunks (recompute them in backward) only when keeping every chunk's
        # activations would cost more than CHECKPOINT_ABOVE floats.
        remat = torch.is_grad_enabled() and (z.requires_grad or places.requires_grad) \
            and z.shape[0] * places.shape[0] > CHECKPOINT_ABOVE
        lses = []
        for start in range(0, places.shape[0], self.chunk):
            stop = min(start + self.chunk, places.shape[0])
            args = (z, places[start:stop], place_xyz[start:stop], photo_xyz, target,
                    tau, self.log_lambda, self.log_sigma, None if log_w is None else log_w[start:stop])
            fn = _ChunkLSE(self, geometry, start)
            lses.append(checkpoint(fn, *args, use_reentrant=False) if remat else fn(*args))
        neg_lse = torch.logsumexp(torch.stack(lses, dim=1), dim=1)  # (B,)
        return torch.logaddexp(pos_logit, neg_lse) - pos_logit

    def forward(self, geometry, z, places_by_level, targets, photo_latlon, place_latlon_by_level,
                log_w_by_level=None):
        """Total loss sum_l beta_l mean_b L_l and the per-level means.

        targets (B, L) long, -1 where a level's ground truth is unknown (skipped);
        log_w_by_level: per level None (all places) or the sample's log weights.
        """
        total = z.new_zeros(())
        per_level = {}
        log_w_by_level = log_w_by_level or [None] * len(places_by_level)
        for lv, (places, latlon) in enumerate(zip(places_by_level, place_latlon_by_level)):
            valid = targets[:, lv] >= 0
            if not valid.any():
                continue
            loss = self.level_loss(geometry, z[valid], places, targets[valid, lv],
                                   photo_latlon[valid], latlon, log_w_by_level[lv]).mean()
            per_level[lv] = loss.detach()
            total = total + self.betas[lv] * loss
        return total, per_level


def _unit_xyz(latlon_deg: torch.Tensor) -> torch.Tensor:
    """(N, 2) degrees -> (N, 3) unit vectors."""
    lat, lon = torch.deg2rad(latlon_deg[:, 0]), torch.deg2rad(latlon_deg[:, 1])
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


def chord_km(a_xyz: torch.Tensor, b_xyz: torch.Tensor) -> torch.Tensor:
    """Great-circle km between all pairs of unit vectors: (B, 3), (N, 3) -> (B, N).

    The same distance as haversine_km, through one matrix product: |a - b|^2 = 2 - 2 a.b,
    d = 2R asin(|a - b| / 2). In float32 it is good to about 0.1 km, plenty for weights.
    """
    sq = (2.0 - 2.0 * a_xyz @ b_xyz.T).clamp_min(0.0)  # rounding can dip below 0
    return 2.0 * EARTH_RADIUS_KM * torch.asin((sq.sqrt() / 2.0).clamp_max(1.0))


class _ChunkLSE:
    """logsumexp over one chunk of negatives (the positive masked out): -> (B,)."""

    def __init__(self, loss: GeoWeightedLoss, geometry, start: int):
        self.loss, self.geometry, self.start = loss, geometry, start

    def __call__(self, z, places, place_xyz, photo_xyz, target, tau, log_lambda, log_sigma, log_w=None):
        logits = -self.geometry.sq_dist_matrix(z, places) / tau  # (B, C)
        if log_w is not None:
            logits = logits + log_w
        if self.loss.geo_weighting:
            g = chord_km(photo_xyz, place_xyz)  # (B, C) great-circle km
            x = g / log_sigma.exp()
            k = torch.exp(-x) if self.loss.kernel == "laplace" else torch.exp(-x * x)
            logits = logits + torch.log1p(log_lambda.exp() * k)
        local = target - self.start
        inside = (local >= 0) & (local < places.shape[0])
        rows = torch.nonzero(inside).squeeze(1)
        logits = logits.index_put((rows, local[rows]), torch.tensor(-math.inf, device=logits.device, dtype=logits.dtype))
        return torch.logsumexp(logits, dim=1)
