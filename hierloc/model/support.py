"""Support points of the support-attention photo head (ModelConfig.photo_head = "support").

The head's keys are places' location features: every city at its own coordinates and the
GeoCLIP gallery points (100k GPS points that ship in the geoclip wheel), each filed under
the city the benchmark's reverse geocoding gives it; the same points the zero-shot decoder
sums its posterior over (infer.zeroshot.TreePosterior). They are not stored in a
checkpoint: GeoCLIP's location encoder recomputes them offline from the place table and
the wheel (cached), and the checkpoint keeps their hash so that a different set is
refused rather than silently used.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def support_hash(latlon, city) -> str:
    """Hash of the support points' coordinates and their cities, in order."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(latlon, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(city, dtype=np.int64)).tobytes())
    return h.hexdigest()


def log_population(table, n_support: int) -> torch.Tensor:
    """(S,) centred log population of the cities' own points (GeoNames, in the place
    table; unknown or under 1,000 counts as 1,000, as the benchmark's city pool does), 0 for
    the other support points."""
    city = table.level_slice("city")
    pop = np.nan_to_num(table.population[city], nan=1000.0).clip(min=1000.0)
    lp = np.log(pop)
    out = torch.zeros(n_support)
    out[:len(lp)] = torch.as_tensor(lp - lp.mean(), dtype=torch.float32)
    return out


def location_log_prior(table, n_support: int, gallery_share: float = 0.5) -> torch.Tensor:
    """(S,) log of where the GeoCLIP-space pseudo-photos are drawn, per support point: a
    share ``gallery_share`` of them at GeoCLIP's gallery points (uniform; the points after
    the cities) and the rest at cities by population (at least 1,000), as
    data.pseudo_photos.location_pool draws them, over the whole world; centred. The prior
    of the support head's attention when it is not learned (train.geoclip_recipe,
    ``support_prior="analytic"``); -inf for a kind of point with no share."""
    city = table.level_slice("city")
    n_city = city.stop - city.start
    pop = torch.as_tensor(np.nan_to_num(table.population[city], nan=1000.0).clip(min=1000.0), dtype=torch.float64)
    w = torch.zeros(n_support, dtype=torch.float64)
    w[:n_city] = (1.0 - gallery_share) * pop / pop.sum()
    if n_support > n_city:
        w[n_city:] = gallery_share / (n_support - n_city)
    logw = torch.log(w)
    finite = torch.isfinite(logw)
    return (logw - logw[finite].mean()).float()


def support_from_posterior(post, table=None) -> dict:
    """{"unit" (S, 512), "ancestors" [4 x (S,)] local place index per level, "hash",
    "log_population" (S,) when the table is given} of a TreePosterior's support points."""
    anc = [None, None, None, post.support_city.long()]
    for lv in (3, 2, 1):
        anc[lv - 1] = post.parents[lv][anc[lv]]
    out = {"unit": post.support, "ancestors": anc,
           "hash": support_hash(post.support_latlon.numpy(), post.support_city.numpy())}
    if table is not None:
        out["log_population"] = log_population(table, len(post.support))
    return out


def support_for_table(table) -> dict:
    """The support points of a place table (its cities + GeoCLIP's gallery); see the module."""
    from hierloc.data.place_features import location_features
    from hierloc.infer.zeroshot import TreePosterior

    return support_from_posterior(TreePosterior.for_table(table, location_features(table)[3]), table)
