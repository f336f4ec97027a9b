"""`eval --images DIR --labels CSV`: benchmark metrics on any labelled folder of photos.

Labels: a CSV with columns file, latitude, longitude and, optionally, the places:
either keys (unique_country, unique_region, unique_sub-region, unique_city, OSV-5M's)
or names (country as ISO alpha-2, region, sub-region, city). Im2GPS3k's layout
(IMG_ID, LAT, LON; the photo file named by IMG_ID) is read as file, latitude, longitude. Distances use the rows
with coordinates; each level's accuracy uses the rows that name that level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierloc import LEVELS
from hierloc.eval.metrics import all_metrics, level_accuracy


def _norm(v) -> str:
    return str(v).strip().casefold() if v is not None and str(v).strip() not in ("", "nan", "NaN") else ""


def _predict_in_batches(predictor, paths: list, beam: int, batch: int = 16, progress: bool = True) -> list:
    """Every photo, ``batch`` at a time through the encoder and the search, with a bar."""
    from tqdm import tqdm

    out = []
    with tqdm(total=len(paths), desc="photos", unit="photo", disable=not progress) as bar:
        for s in range(0, len(paths), batch):
            out += predictor.predict_many(paths[s:s + batch], beam=beam, top_k=1, batch=batch)
            bar.update(len(paths[s:s + batch]))
    return out


def evaluate_folder(images, labels, model=None, beam: int = 10, predictor=None) -> dict:
    from hierloc.eval.evaluate import reverse_geocoded_keys
    from hierloc.geo.places import default_places
    from hierloc.geo.reverse import benchmark_geocoder
    from hierloc.infer.predictor import load_predictor

    df = pd.read_csv(labels, dtype=str, keep_default_na=False)
    layout = "im2gps3k" if {"IMG_ID", "LAT", "LON"} <= set(df.columns) and "file" not in df.columns else "hierloc"
    if layout == "im2gps3k":
        df = df.rename(columns={"IMG_ID": "file", "LAT": "latitude", "LON": "longitude"})
    if "file" not in df.columns:
        raise ValueError(f"{labels} needs a 'file' column naming the photos in {images}")
    predictor = predictor or load_predictor(model)
    lat = pd.to_numeric(df.get("latitude", ""), errors="coerce").to_numpy()
    lon = pd.to_numeric(df.get("longitude", ""), errors="coerce").to_numpy()
    names_given = any(lv in df.columns for lv in LEVELS)
    use_keys = all(f"unique_{lv}" in df.columns for lv in LEVELS[1:])
    truth_from = "labels"
    if not use_keys and not names_given:  # only GPS: the places by the benchmark's protocol
        df = df.copy()
        gps = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        keys = reverse_geocoded_keys(lat[gps], lon[gps]) if gps.any() else {}
        for lv in LEVELS:
            col = np.full(len(df), "", dtype=object)
            col[gps] = keys.get(lv, [])
            df[f"unique_{lv}"] = col
        use_keys, truth_from = True, "the labels' GPS, reverse-geocoded by the benchmark's protocol"
    preds = _predict_in_batches(predictor, [Path(images) / f for f in df["file"]], beam)
    ok = np.array([p.ok for p in preds], dtype=bool)
    has_gps = ok & np.isfinite(lat) & np.isfinite(lon)
    plat = np.array([p.latitude if p.ok else np.nan for p in preds], dtype=float)
    plon = np.array([p.longitude if p.ok else np.nan for p in preds], dtype=float)

    geo = default_places()
    rg_rows = benchmark_geocoder().lookup(plat[ok], plon[ok])

    def pred_values(level_idx: int) -> list[str]:
        level = LEVELS[level_idx]
        out = []
        for p in np.array(preds, dtype=object)[ok]:
            place = p.path[level_idx]
            out.append(place["key"] if use_keys else (p.country_code if level == "country" else _norm(place["name"])))
        return out

    def rg_values(level_idx: int) -> list[str]:
        rows = geo.ancestor_at(rg_rows, level_idx)
        if use_keys:
            return geo.key[rows].tolist()
        if level_idx == 0:
            return geo.country_code[rows].tolist()
        return [_norm(n) for n in geo.name[rows]]

    true, pred, rg = {}, {}, {}
    for i, level in enumerate(LEVELS):
        col = f"unique_{level}" if use_keys else level
        if col not in df.columns:
            continue
        vals = df[col][ok].tolist()
        true[level] = [v if use_keys else (v.strip().upper() if level == "country" else _norm(v)) or "NaN" for v in vals]
        pred[level], rg[level] = pred_values(i), rg_values(i)
    res = {"layout": layout, "n_photos": len(df), "n_read": int(ok.sum()), "n_with_gps": int(has_gps.sum()),
           "truth_from": truth_from,
           "profile": predictor.profile, "untrained": predictor.untrained,
           "failed": {str(df["file"][i]): preds[i].error for i in np.flatnonzero(~ok)}}
    if has_gps.any():
        m = all_metrics(plat[has_gps], plon[has_gps], lat[has_gps], lon[has_gps])
        res.update(m)
    else:
        res.update({"mean_km": float("nan"), "median_km": float("nan"), "geoscore": float("nan")})
    if true:
        res["accuracy"], res["level_counts"] = level_accuracy(pred, true)
        res["accuracy_reverse_geocoded"], _ = level_accuracy(rg, true)
    return res
