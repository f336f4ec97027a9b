"""The OSV-5M benchmark's metrics (METHOD.md section 4), in one place.

- distance: haversine with R = 6371 km; mean and median;
- GeoScore: mean of 5000 * exp(-d_km / 1492.7);
- accuracy within 1, 25, 200, 750 and 2500 km;
- accuracy per level (country, region, sub-region, city) on keys; a photo whose
  ground truth at a level is empty (key part "NaN" or no key) is left out of that
  level's denominator.
"""

from __future__ import annotations

import numpy as np

from hierloc import LEVELS
from hierloc.geo.distance import haversine_km

THRESHOLDS_KM = (1, 25, 200, 750, 2500)
GEOSCORE_SCALE_KM = 1492.7

PUBLISHED = {  # OSV-5M test (METHOD.md section 3): accuracy %, mean km, GeoScore
    "OSV-5M best baseline (hybrid, ViT-L/14)": (68.0, 39.4, 10.3, 5.9, 1814, 3361),
    "StreetCLIP zero-shot": (38.4, 20.8, 9.9, 14.8, 2854, 2273),
    "StreetCLIP retrieval": (73.4, 45.8, 28.4, 19.9, 1386, 3597),
    "RFM S2 (flow matching)": (76.2, 44.2, None, 5.4, 1069, 3767),
    "HierLoc paper, CLIP ViT-L/14": (80.1, 52.9, 39.0, 22.2, 1067, 3850),
    "HierLoc paper, DINOv3": (82.9, 55.0, 40.7, 23.3, 861, 3963),
}

PUBLISHED_IM2GPS3K = {  # Im2GPS3k, % within 1 / 25 / 200 / 750 / 2500 km (METHOD.md section 3)
    "GeoCLIP": (14.1, 34.5, 50.7, 69.7, 83.8),
    "HierLoc paper": (11.3, 43.8, 58.4, 74.1, 85.1),
    "PIGEON": (11.3, 36.7, 53.8, 72.4, 85.3),
}


def geoscore(dist_km) -> float:
    return float(np.mean(5000.0 * np.exp(-np.asarray(dist_km, dtype=np.float64) / GEOSCORE_SCALE_KM)))


def key_is_known(key: str) -> bool:
    """A ground-truth key counts unless it is empty or its own name part is NaN."""
    if key is None or (isinstance(key, float) and np.isnan(key)):
        return False
    key = str(key)
    return bool(key) and key.split("_", 1)[0] not in ("NaN", "nan", "")


def distance_metrics(pred_lat, pred_lon, true_lat, true_lon) -> dict:
    d = haversine_km(pred_lat, pred_lon, true_lat, true_lon)
    out = {"n": int(d.size), "mean_km": float(np.mean(d)), "median_km": float(np.median(d)),
           "geoscore": geoscore(d)}
    out["acc_km"] = {str(t): float(np.mean(d <= t)) for t in THRESHOLDS_KM}
    return out


def level_hits(pred_keys: dict[str, list], true_keys: dict[str, list]) -> dict[str, np.ndarray]:
    """Per level: right (True) or wrong for each photo whose ground truth is known there."""
    hits = {}
    for level in LEVELS:
        if level not in true_keys or level not in pred_keys:
            continue
        t = np.asarray(true_keys[level], dtype=object)
        p = np.asarray(pred_keys[level], dtype=object)
        known = np.array([key_is_known(k) for k in t], dtype=bool)
        hits[level] = p[known] == t[known]
    return hits


def level_accuracy(pred_keys: dict[str, list], true_keys: dict[str, list]) -> tuple[dict, dict]:
    """Per level: accuracy over photos whose ground truth is known, and that count."""
    hits = level_hits(pred_keys, true_keys)
    acc = {lv: float(np.mean(h)) if h.size else float("nan") for lv, h in hits.items()}
    return acc, {lv: int(h.size) for lv, h in hits.items()}


def paired_difference(a_right, b_right, z: float = 1.96) -> dict:
    """Decoder A against decoder B on the same photos (per photo: right or not), in points
    of accuracy: the difference, its 95 % interval (the paired Wald interval; only photos
    that one gets right and the other wrong move it) and those two counts.

    One draw of 1,000 photos at 80 % carries about +-2.5 points of sampling noise on each
    accuracy alone; pairing removes what both decoders share, so the interval is the
    honest size of a gap between two decoders read on one draw."""
    a, b = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same photos: {a.shape} against {b.shape}")
    n = a.size
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if n == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "only_a": 0, "only_b": 0,
                "photos": 0}
    d = (only_a - only_b) / n
    half = z * np.sqrt(max((only_a + only_b) / n - d * d, 0.0) / n)
    return {"diff": round(100 * d, 2), "low": round(100 * (d - half), 2), "high": round(100 * (d + half), 2),
            "only_a": only_a, "only_b": only_b, "photos": int(n)}


def all_metrics(pred_lat, pred_lon, true_lat, true_lon, pred_keys=None, true_keys=None,
                rg_keys=None) -> dict:
    """Distances and GeoScore, plus per-level accuracy under both protocols:
    "accuracy" from the predicted places, "accuracy_reverse_geocoded" from the places
    the benchmark's reverse geocoding gives for the predicted GPS (rg_keys)."""
    out = distance_metrics(pred_lat, pred_lon, true_lat, true_lon)
    if true_keys is not None and pred_keys is not None:
        out["accuracy"], out["level_counts"] = level_accuracy(pred_keys, true_keys)
    if true_keys is not None and rg_keys is not None:
        out["accuracy_reverse_geocoded"], _ = level_accuracy(rg_keys, true_keys)
    return out


def markdown_table(results: dict[str, dict], published: bool = True) -> str:
    """Results (name -> metrics), beside the published OSV-5M numbers (published=True:
    only when the photos are OSV-5M's), as markdown."""
    head = "| method | country | region | sub-region | city | mean km | median km | GeoScore |\n|---|---|---|---|---|---|---|---|"
    rows = []

    def pct(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"

    for name, m in results.items():
        acc = m.get("accuracy", {})
        rows.append(f"| {name} | " + " | ".join(pct(acc.get(lv)) for lv in LEVELS)
                    + f" | {m['mean_km']:.0f} | {m['median_km']:.1f} | {m['geoscore']:.0f} |")
    for name, (c, r, s, ci, mean_km, gs) in (PUBLISHED.items() if published else ()):
        cells = ["-" if v is None else f"{v:.1f}" for v in (c, r, s, ci)]
        rows.append(f"| {name} (published) | " + " | ".join(cells) + f" | {mean_km} | - | {gs} |")
    return "\n".join([head, *rows])


def km_table(results: dict[str, dict], published: dict = PUBLISHED_IM2GPS3K) -> str:
    """% within 1/25/200/750/2500 km and median km per result, beside published rows."""
    head = ("| method | " + " | ".join(f"{t} km" for t in THRESHOLDS_KM) + " | median km |\n"
            + "|---" * (len(THRESHOLDS_KM) + 2) + "|")
    rows = [f"| {name} | " + " | ".join(f"{100 * m['acc_km'][str(t)]:.1f}" for t in THRESHOLDS_KM)
            + f" | {m['median_km']:.1f} |" for name, m in results.items() if "acc_km" in m]
    rows += [f"| {name} (published, Im2GPS3k) | " + " | ".join(str(v) for v in vals) + " | - |"
             for name, vals in published.items()]
    return "\n".join([head, *rows])
