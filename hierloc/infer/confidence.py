"""Confidences that mean what they say: one distribution over the place tree per photo.

A decoder scores every place of every level (the trained model: -d^2 / tau, its squared
distance to the photo; zero-shot: the log of its posterior mass). The probability of a
place is the product, down its path, of the softmax of those scores among its siblings,
each level's scores divided by that level's temperature:

    p(city) = p(country) p(region | country) p(sub-region | region) p(city | sub-region)

so a place's probability is the sum of its children's, the header's per-level
confidences, the map's "where else" and the Poincare disk's photo all read the same
numbers, and a temperature changes no answer (it keeps the order among siblings).

The temperatures are fitted on validation photos, level by level from the country down:
each one minimises the log loss of the event "the answer's place at this level is right"
under the confidence shown for it (:func:`fit_temperatures`), so that a place shown at
70% is right about 70% of the time on photos like those. ``python -m hierloc calibrate``
fits them in GeoCLIP's space and writes them into a checkpoint's config.json.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_LEVELS = 4
UNCALIBRATED = (1.0, 1.0, 1.0, 1.0)
CITY_DISTRIBUTION = 256
"""The cities of largest probability handed back with each answer (for the disk)."""
GRID = tuple(float(t) for t in np.exp(np.linspace(math.log(0.05), math.log(20.0), 121)))
"""Temperatures tried by :func:`fit_temperatures` (5 % apart, 0.05 to 20)."""


def scatter_logsumexp(logits: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per row, logsumexp of the columns that share an index: (B, M), (M,) -> (B, n);
    -inf where an index has no column."""
    idx = index.expand(logits.shape[0], -1)  # (B, M)
    mx = torch.full((logits.shape[0], n), -torch.inf, dtype=logits.dtype, device=logits.device).scatter_reduce(
        1, idx, logits, "amax", include_self=True)  # (B, n)
    # an empty group keeps -inf; subtract 0 there instead (exp(-inf - 0) = 0, no NaN)
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros_like(mx).scatter_add_(1, idx, torch.exp(logits - safe.gather(1, idx)))
    return safe + torch.log(s)  # log(0) = -inf for empty groups


def check_temperatures(temperatures) -> tuple:
    t = tuple(float(x) for x in temperatures)
    if len(t) != NUM_LEVELS or not all(math.isfinite(x) and x > 0 for x in t):
        raise ValueError(f"confidence temperatures must be {NUM_LEVELS} positive numbers, got {temperatures!r}")
    return t


def tree_log_marginals(level_scores: list[torch.Tensor], parents, temperatures=UNCALIBRATED) -> list[torch.Tensor]:
    """level_scores[l] (B, N_l), parents[l] (N_l,) local parent ids for l = 1..3 ->
    per level (B, N_l) float64 log probability of every place (see the module docstring)."""
    temps = check_temperatures(temperatures)
    out = []
    for lv, s in enumerate(level_scores):
        x = s.double() / temps[lv]
        if lv == 0:
            out.append(torch.log_softmax(x, dim=1))
            continue
        par = parents[lv]
        lse = scatter_logsumexp(x, par, level_scores[lv - 1].shape[1])  # (B, N_{l-1}) over each place's children
        out.append(x - lse[:, par] + out[-1][:, par])
    return out


def read_marginals(marginals: list[torch.Tensor], paths: torch.Tensor, cities: int = CITY_DISTRIBUTION) -> dict:
    """What the app shows, from tree_log_marginals and the search's paths (B, k, 4) (-1:
    none): confidence (B, 4) of the first path's places; probability (B, k) of each path
    (its city's); levels (every country's, every region's); the ``cities`` most probable
    cities (local ids, probabilities)."""
    best = paths[:, 0].clamp_min(0)
    confidence = torch.stack([marginals[lv].gather(1, best[:, lv:lv + 1]).squeeze(1) for lv in range(NUM_LEVELS)], 1)
    city = paths[:, :, -1]
    probability = marginals[-1].gather(1, city.clamp_min(0)).exp().masked_fill(city < 0, 0.0)
    top, idx = torch.topk(marginals[-1], min(cities, marginals[-1].shape[1]), dim=1)
    return {"confidence": confidence.exp(), "probability": probability,
            "levels": (marginals[0].exp(), marginals[1].exp()), "cities": (idx, top.exp())}


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------
def answer_siblings(level_scores: list[torch.Tensor], tree, answer: torch.Tensor) -> list[tuple]:
    """For each level, the scores of the answer's place and its siblings (the children of
    the answer's parent; every country at level 0): (B, W) padded with -inf, and the
    answer's column (B,). tree: infer.beam.Hierarchy; answer (B, 4) local ids."""
    from hierloc.infer.beam import _children_of_kept

    out = [(level_scores[0].double(), answer[:, 0])]
    for lv in range(1, NUM_LEVELS):
        kids, _ = _children_of_kept(tree, lv, answer[:, lv - 1:lv])  # (B, W)
        x = level_scores[lv].double().gather(1, kids.clamp_min(0)).masked_fill(kids < 0, -torch.inf)
        out.append((x, (kids == answer[:, lv:lv + 1]).double().argmax(1)))
    return out


def _log_conditional(x: torch.Tensor, pos: torch.Tensor, t: float) -> torch.Tensor:
    return torch.log_softmax(x / t, dim=1).gather(1, pos[:, None]).squeeze(1)


def _log_loss(log_conf: torch.Tensor, hit: torch.Tensor) -> float:
    c = log_conf.exp().clamp(1e-9, 1 - 1e-9)
    return float(-(hit * c.log() + (1 - hit) * (1 - c).log()).mean())


def fit_temperatures(chunks: list[list[tuple]], hits: np.ndarray, grid=GRID) -> tuple:
    """chunks: answer_siblings of consecutive batches of photos; hits (N, 4) bool, whether
    each answer's place is right at each level. Level by level from the country, the
    temperature of ``grid`` whose confidence (the product of the levels' conditionals
    down to this one) has the least log loss against the hits -> 4 temperatures."""
    hit = torch.as_tensor(np.asarray(hits, dtype=np.float64))
    n = sum(len(c[0][1]) for c in chunks)
    if n != len(hit) or n == 0:
        raise ValueError(f"{n} photos' scores for {len(hit)} photos' hits")
    prev = [torch.zeros(len(c[0][1]), dtype=torch.float64) for c in chunks]
    temps = []
    for lv in range(NUM_LEVELS):
        h = hit[:, lv]

        def loss(t):
            return _log_loss(torch.cat([p + _log_conditional(*c[lv], t) for p, c in zip(prev, chunks)]), h)

        best = min(grid, key=loss)
        temps.append(float(best))
        prev = [p + _log_conditional(*c[lv], best) for p, c in zip(prev, chunks)]
    return tuple(temps)


def answer_confidence(chunks: list[list[tuple]], temperatures) -> np.ndarray:
    """(N, 4) the confidence shown for each answer's places with these temperatures."""
    temps = check_temperatures(temperatures)
    out = []
    for c in chunks:
        log_c = torch.cumsum(torch.stack([_log_conditional(*c[lv], temps[lv]) for lv in range(NUM_LEVELS)], 1), 1)
        out.append(log_c.exp())
    return torch.cat(out).numpy()


def calibration_error(conf: np.ndarray, hit: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error in points: the mean over equal-width confidence bins,
    weighted by their photos, of |mean confidence - share right|."""
    conf, hit = np.asarray(conf, dtype=np.float64), np.asarray(hit, dtype=np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            err += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return round(100 * err, 2)


def summary(conf: np.ndarray, hits: np.ndarray) -> dict:
    """Per level: share right, mean confidence, calibration error (all in points)."""
    from hierloc import LEVELS

    return {LEVELS[lv]: {"right": round(100 * float(np.mean(hits[:, lv])), 1),
                         "confidence": round(100 * float(np.mean(conf[:, lv])), 1),
                         "calibration_error": calibration_error(conf[:, lv], hits[:, lv])}
            for lv in range(NUM_LEVELS)}
