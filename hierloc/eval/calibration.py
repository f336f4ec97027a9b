"""Fit and check the confidence temperatures (infer.confidence) of a GeoCLIP-space decoder,
on GeoCLIP-space pseudo-photos (a proxy, not real photos).

Fitted on the shipped recipe's validation photos (train.geoclip_recipe.Validation: its
seed, never the benchmark's), checked on the benchmark's own photos (bench geoclip's
seed 0, training cells), which the fit never sees. `python -m hierloc calibrate`.
"""

from __future__ import annotations

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.infer.confidence import (UNCALIBRATED, answer_confidence, answer_siblings, fit_temperatures,
                                      summary)

CHUNK = 256


def model_scorer(model, tree):
    """A trained model: u (B, 512) -> its answers (B, 4) and every place's score per level.
    ValueError for a model not trained in GeoCLIP's space (its photos are not these)."""
    from hierloc.eval.evaluate import level_scores, search_features
    from hierloc.eval.geoclip_bench import FEATURE_DIM

    if model.config.feat_dim != FEATURE_DIM or model.config.backbone != "geoclip":
        raise ValueError(f"not trained in GeoCLIP's space (backbone {model.config.backbone!r}, "
                         f"{model.config.feat_dim}-d features): its confidences cannot be fitted on "
                         f"GeoCLIP-space photos")
    points = model.place_points()

    def score(u):
        res = search_features(model, u, tree, beam=10, points=points)
        z, attention = model.located(u)
        return res.best, level_scores(model, z, points, attention, u)

    return score


def zeroshot_scorer(posterior):
    """Zero-shot's tree posterior: u -> its answers and every place's log mass per level."""
    def score(u):
        return posterior.search(u, k=1).best, posterior.level_log_mass(u)[0]

    return score


@torch.inference_mode()
def collect(score, tree, u: torch.Tensor, keys: dict, table) -> tuple[list, np.ndarray]:
    """(answer_siblings per chunk of photos, hits (N, 4)) of one set of photos."""
    chunks, hits = [], []
    starts = [table.level_slice(lv).start for lv in range(4)]
    for i in range(0, len(u), CHUNK):
        best, scores = score(u[i:i + CHUNK])
        chunks.append(answer_siblings(scores, tree, best))
        pred = np.stack([table.key[best[:, lv].numpy() + starts[lv]].astype(str) for lv in range(4)], 1)
        hits.append(np.stack([pred[:, lv] == keys[LEVELS[lv]][i:i + CHUNK] for lv in range(4)], 1))
    return chunks, np.concatenate(hits)


def photo_sets(table, n: int, seeds: dict, encoder=None) -> dict:
    """{kind: (features, true keys)} at the calibrated level, training cells; seeds:
    {kind: (location seed, noise seed)}."""
    from hierloc.data.place_features import load_geoclip_location_encoder
    from hierloc.data.pseudo_photos import CALIBRATED, photo_features, sample_locations
    from hierloc.geo.reverse import benchmark_geocoder

    encoder = encoder or load_geoclip_location_encoder()
    rg = benchmark_geocoder(table)
    out = {}
    for where, (loc_seed, noise_seed) in seeds.items():
        lat, lon = sample_locations(n, where, loc_seed, table=table, split="train")
        u = photo_features(encoder, lat, lon, CALIBRATED, seed=noise_seed)
        rows = rg.lookup(lat, lon)
        out[where] = (torch.nn.functional.normalize(u.float(), dim=-1),
                      {lv: table.key[table.ancestor_at(rows, k)].astype(str) for k, lv in enumerate(LEVELS)})
    return out


def validation_seeds() -> dict:
    from hierloc.train.geoclip_recipe import VALIDATION_SEED

    return {where: (VALIDATION_SEED + i, VALIDATION_SEED + 10 + i) for i, where in enumerate(("cities", "gallery"))}


BENCHMARK_SEEDS = {"cities": (0, 1), "gallery": (0, 1)}
"""bench geoclip's photos at --seed 0 (locations from seed 0, noise from seed 1)."""


def calibrate(score, table, tree, fit_sets: dict, check_sets: dict | None = None) -> dict:
    """Fit the temperatures on fit_sets (both kinds together); per set, the share right,
    the mean confidence and the calibration error per level, before (1 at every level)
    and after -> a JSON-ready report with "temperatures"."""
    got = {name: collect(score, tree, u, keys, table) for name, (u, keys) in fit_sets.items()}
    temps = fit_temperatures([c for chunks, _ in got.values() for c in chunks],
                             np.concatenate([h for _, h in got.values()]))
    checked = {name: collect(score, tree, u, keys, table) for name, (u, keys) in (check_sets or {}).items()}

    def table_of(sets):
        return {name: {"photos": int(len(h)), "before": summary(answer_confidence(c, UNCALIBRATED), h),
                       "after": summary(answer_confidence(c, temps), h)} for name, (c, h) in sets.items()}

    return {"temperatures": [round(t, 4) for t in temps], "validation": table_of(got), "check": table_of(checked)}


def markdown(report: dict) -> str:
    """The report as a table: per set and level, right / confidence / calibration error."""
    lines = [f"temperatures (country, region, sub-region, city): {report['temperatures']}", "",
             "| photos | level | right % | confidence % before -> after | calibration error before -> after |",
             "|---|---|---|---|---|"]
    for part in ("validation", "check"):
        for name, r in report.get(part, {}).items():
            for lv in LEVELS:
                b, a = r["before"][lv], r["after"][lv]
                lines.append(f"| {part}: {name} ({r['photos']}) | {lv} | {a['right']} | {b['confidence']} -> "
                             f"{a['confidence']} | {b['calibration_error']} -> {a['calibration_error']} |")
    return "\n".join(lines)
