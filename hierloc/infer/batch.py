"""Batch prediction over files, folders and globs, written as JSONL, CSV or GeoJSON."""

from __future__ import annotations

import csv
import glob
import io
import json
from pathlib import Path

from hierloc import LEVELS

FORMATS = ("jsonl", "csv", "geojson")
COLUMNS = (["path", "ok", "error", "profile", "untrained"]
           + [f"{lv}_{part}" for lv in LEVELS for part in ("key", "name")]
           + ["latitude", "longitude", "score", "exif_latitude", "exif_longitude", "error_km"])


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders walked (sorted, hidden files skipped), globs expanded."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            out.append(p)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            out.extend(Path(m) for m in matches if Path(m).is_file())
            if not matches:
                out.append(p)  # reported as "file not found"
    return out


def record(path: Path, pred) -> dict:
    """One output line (the COLUMNS) for a Prediction."""
    rec = {c: None for c in COLUMNS}
    rec.update(path=str(path), ok=pred.ok, error=pred.error, profile=pred.profile, untrained=pred.untrained)
    for place in pred.path:
        rec[f"{place['level']}_key"], rec[f"{place['level']}_name"] = place["key"], place["name"]
    for k in ("latitude", "longitude", "score", "exif_latitude", "exif_longitude", "error_km"):
        rec[k] = getattr(pred, k)
    return rec


def write(records: list[dict], fmt: str, out) -> None:
    if fmt == "jsonl":
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        w = csv.DictWriter(out, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(records)
    elif fmt == "geojson":
        feats = [{"type": "Feature",
                  "geometry": {"type": "Point", "coordinates": [r["longitude"], r["latitude"]]} if r["ok"] else None,
                  "properties": {k: v for k, v in r.items() if k not in ("latitude", "longitude")}}
                 for r in records]
        out.write(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False, indent=1))
    else:
        raise ValueError(f"format must be one of {FORMATS}")


def predict_paths(predictor, items: list[str], top_k: int = 5, beam: int = 10, progress: bool = True,
                  batch: int = 16) -> list[dict]:
    """Every photo of the inputs, ``batch`` at a time through the image encoder and search."""
    from tqdm import tqdm

    paths = expand_inputs(items)
    records = []
    with tqdm(total=len(paths), desc="photos", unit="photo", disable=not progress) as bar:
        for start in range(0, len(paths), batch):
            group = paths[start:start + batch]
            preds = predictor.predict_many(group, beam=beam, top_k=top_k, batch=batch)
            records.extend(record(p, pred) for p, pred in zip(group, preds))
            bar.update(len(group))
    return records


def to_text(records: list[dict], fmt: str) -> str:
    buf = io.StringIO()
    write(records, fmt, buf)
    return buf.getvalue()
