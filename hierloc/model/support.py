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


def location_log_prior(table, n_support: int, gallery_share: float = 0.5,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
    """(S,) log of where the GeoCLIP-space pseudo-photos are drawn, per support point: a
    share ``gallery_share`` of them at GeoCLIP's gallery points (uniform; the points after
    the cities) and the rest at cities by population, with the weights
    data.pseudo_photos.location_pool draws them by; over the whole world, or over the points
    where ``keep`` (S,) is true (each share spread over its kept points); centred. The prior
    of the support head's attention when it is not learned (train.geoclip_recipe,
    ``support_prior="analytic"``) and of eval.geoclip_bench.bayes_decoder; -inf for a point
    left out or of a kind with no share."""
    from hierloc.data.pseudo_photos import location_pool

    n_city = table.level_size("city")
    keep = torch.ones(n_support, dtype=torch.bool) if keep is None else torch.as_tensor(keep, dtype=torch.bool)
    w = torch.zeros(n_support, dtype=torch.float64)
    w[:n_city] = torch.as_tensor(location_pool("cities", table)[2], dtype=torch.float64)
    w[n_city:] = 1.0
    w = w * keep
    w[:n_city] *= (1.0 - gallery_share) / w[:n_city].sum()
    if n_support > n_city:
        w[n_city:] *= gallery_share / w[n_city:].sum()
    logw = torch.log(w)
    return (logw - logw[torch.isfinite(logw)].mean()).float()


def support_ancestors(post) -> list[torch.Tensor]:
    """Per level (country .. city), the local place index of each of a TreePosterior's support points."""
    anc = [post.support_city.long()]
    for lv in (3, 2, 1):
        anc.insert(0, post.parents[lv][anc[0]])
    return anc


def support_from_posterior(post, table=None) -> dict:
    """{"unit" (S, 512), "ancestors" [4 x (S,)] local place index per level, "latlon" (S, 2)
    degrees, "hash", "log_population" (S,) when the table is given} of a TreePosterior's
    support points."""
    out = {"unit": post.support, "ancestors": support_ancestors(post), "latlon": post.support_latlon,
           "hash": support_hash(post.support_latlon.numpy(), post.support_city.numpy())}
    if table is not None:
        out["log_population"] = log_population(table, len(post.support))
    return out


def support_for_table(table) -> dict:
    """The support points of a place table (its cities + GeoCLIP's gallery); see the module."""
    from hierloc.data.place_features import location_features
    from hierloc.infer.zeroshot import TreePosterior

    return support_from_posterior(TreePosterior.for_table(table, location_features(table)[3]), table)
