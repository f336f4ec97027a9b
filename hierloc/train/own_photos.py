"""`train --images DIR`: HierLoc on a folder of your own geotagged photos.

1. Scan (:func:`scan`): every file of the folder, read as predict reads it; its GPS from a
   labels file (file/latitude/longitude, or Im2GPS3k's IMG_ID/LAT/LON) or else its EXIF;
   duplicates found by content. Every file gets a status and a reason; the run folder
   keeps them (photos.csv, problems.csv) and the screen gets one line per kind.
2. Truth: the benchmark's protocol (the nearest GeoNames point of the GPS, its parents).
3. Held out by location: under 2,000 photos, K folds of whole cells of the globe
   (train.own_model.cell_folds; `--folds K`, default 5), each photo tested once by the
   model trained on the other folds; else one split (:func:`split_by_cells`), whole cells
   to the test side; the seed fixes both (saved in split.json); finer cells when the
   photos fall in too few.
4. Features: the chosen backbone, cached by file content (HIERLOC_CACHE/photo_features),
   batched, with a progress bar; an interrupted run starts where it stopped.
5. The hierarchy: the places the photos cover and their ancestors (a subset of the
   offline GeoNames hierarchy, keyed as OSV-5M keys it). HierLoc is trained on it with
   the own-photos recipe (train.own_model: memory of the training photos, a prior over
   places, the answer read from one distribution over the tree).
6. Evaluation on the held-out photos, same photos, same features (:func:`run`): HierLoc,
   the vote of the nearest training photos, a linear classifier per level, the most
   common place, and the profile that answers without this model; one table with each
   method's 95 % paired interval against HierLoc.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hierloc import LEVELS

log = logging.getLogger(__name__)

MIN_TRAIN, MIN_TEST, MIN_PLACES = 20, 5, 2
TEST_SHARE = 0.2
CELL_SIZES_DEG = (1.0, 0.25, 0.05, 0.01)
FOLDS_BELOW = 2000
"""Under this many photos the table is made over 5 folds (each photo tested once)."""


class TooFewPhotos(ValueError):
    """Not enough usable photos for a split; the message says how many there are."""


# ---------------------------------------------------------------------------------------
# 1. scan
# ---------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_labels(path: Path) -> dict[str, tuple[float, float]]:
    """A labels CSV -> {file name: (lat, lon)}: columns file, latitude, longitude (also
    lat/lon), or Im2GPS3k's IMG_ID, LAT, LON."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = {c.lower(): c for c in df.columns}
    if {"img_id", "lat", "lon"} <= set(cols) and "file" not in cols:
        f, la, lo = cols["img_id"], cols["lat"], cols["lon"]
    elif "file" in cols:
        f = cols["file"]
        la = cols.get("latitude", cols.get("lat"))
        lo = cols.get("longitude", cols.get("lon"))
        if la is None or lo is None:
            raise ValueError(f"{path} needs latitude and longitude columns beside 'file'")
    else:
        raise ValueError(f"{path} needs columns file, latitude, longitude (or Im2GPS3k's IMG_ID, LAT, LON); "
                         f"it has {list(df.columns)}")
    lat = pd.to_numeric(df[la], errors="coerce")
    lon = pd.to_numeric(df[lo], errors="coerce")
    return {str(n).strip(): (float(a), float(b)) for n, a, b in zip(df[f], lat, lon)}


def scan(folder, labels=None, progress: bool = True) -> pd.DataFrame:
    """One row per file of ``folder`` (recursively, hidden files skipped): file (relative
    path), sha256, status (ok, not an image, no GPS, bad GPS, duplicate), reason,
    latitude, longitude, gps_from (labels or exif)."""
    from tqdm import tqdm

    from hierloc.images import ImageError, load_image, read_exif_gps

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of photos")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts))
    table = read_labels(Path(labels)) if labels else {}
    seen: dict[str, str] = {}
    rows = []
    for p in tqdm(files, desc="reading photos", unit="file", disable=not progress):
        rel = str(p.relative_to(folder))
        row = {"file": rel, "sha256": "", "status": "ok", "reason": "", "latitude": np.nan, "longitude": np.nan,
               "gps_from": ""}
        rows.append(row)
        if labels and p.resolve() == Path(labels).resolve():
            row.update(status="labels file", reason="the labels file itself")
            continue
        try:
            row["sha256"] = sha256_of(p)
        except OSError as exc:
            row.update(status="unreadable", reason=f"cannot be read ({exc})")
            continue
        if row["sha256"] in seen:
            row.update(status="duplicate", reason=f"the same content as {seen[row['sha256']]}")
            continue
        try:
            load_image(p)
        except ImageError as exc:
            row.update(status="not an image", reason=str(exc))
            continue
        seen[row["sha256"]] = rel
        gps = table.get(rel, table.get(p.name)) if table else None
        if gps is not None:
            lat, lon = gps
            src = "labels"
        else:
            g = read_exif_gps(p)
            lat, lon, src = (g.lat_deg, g.lon_deg, "exif") if g is not None else (np.nan, np.nan, "")
        if not np.isfinite(lat) or not np.isfinite(lon):
            row.update(status="no GPS", reason="no GPS in its EXIF" + (" nor a row in the labels" if table else ""))
            continue
        if abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
            row.update(status="bad GPS", reason=f"GPS {lat}, {lon} is not a place on Earth")
            continue
        row.update(latitude=float(lat), longitude=float(lon), gps_from=src)
    return pd.DataFrame(rows, columns=["file", "sha256", "status", "reason", "latitude", "longitude", "gps_from"])


def summary_lines(df: pd.DataFrame) -> list[str]:
    ok = df[df["status"] == "ok"]
    lines = [f"found {len(df)} files: {len(ok)} photos with GPS"
             + (f" ({(ok['gps_from'] == 'labels').sum()} from the labels, {(ok['gps_from'] == 'exif').sum()} from EXIF)"
                if len(ok) else "")]
    for status in ("not an image", "no GPS", "bad GPS", "duplicate", "unreadable"):
        n = int((df["status"] == status).sum())
        if n:
            example = df[df["status"] == status].iloc[0]
            lines.append(f"{n} {'file' if n == 1 else 'files'} left out: {status} (e.g. {example['file']}: "
                         f"{example['reason']})")
    return lines


# ---------------------------------------------------------------------------------------
# 2-3. truth and split
# ---------------------------------------------------------------------------------------
def truth_rows(lat, lon) -> np.ndarray:
    """The benchmark's protocol: rows of the nearest GeoNames city (offline hierarchy)."""
    from hierloc.geo.reverse import benchmark_geocoder

    return benchmark_geocoder().lookup(np.asarray(lat), np.asarray(lon))


def split_by_cells(lat, lon, seed: int = 0, share: float = TEST_SHARE, sizes=None) -> tuple[np.ndarray, dict]:
    """Test split by location: whole cells (the largest size in ``sizes``, by default
    CELL_SIZES_DEG, that gives at least 5 cells) to the test side, in an order fixed by the
    seed, until about ``share`` of the photos. Returns (is_test (N,), what was done)."""
    from hierloc.data.geoclip_space import cell_of

    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    for size in sizes or CELL_SIZES_DEG:
        cells = cell_of(lat, lon, size)
        uniq = np.unique(cells)
        if len(uniq) >= 5:
            break
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq)
    counts = {c: int((cells == c).sum()) for c in uniq}
    test_cells, n = [], 0
    for c in order:
        if n >= share * len(lat) and len(test_cells):
            break
        if n + counts[c] > 0.5 * len(lat) and len(test_cells):
            continue
        test_cells.append(int(c))
        n += counts[c]
    is_test = np.isin(cells, test_cells)
    return is_test, {"cell_deg": size, "seed": seed, "share": share, "cells": int(len(uniq)),
                     "test_cells": sorted(test_cells)}


def check_enough(n_ok: int, n_places: int, n_train: int, n_test: int) -> None:
    if n_ok < MIN_TRAIN + MIN_TEST or n_places < MIN_PLACES or n_train < MIN_TRAIN or n_test < MIN_TEST:
        raise TooFewPhotos(
            f"found {n_ok} photos with GPS in {n_places} places (cities); need at least {MIN_TRAIN + MIN_TEST} "
            f"photos with GPS in at least {MIN_PLACES} places, so that at least {MIN_TRAIN} train and {MIN_TEST} "
            f"are held out by location (this split: {n_train} train, {n_test} held out)")


# ---------------------------------------------------------------------------------------
# 4. features
# ---------------------------------------------------------------------------------------
def resolve_backbone(name: str) -> str:
    """auto: zero-shot's GeoCLIP image path when CLIP ViT-L/14 is available, else the
    offline EfficientNet-Lite0."""
    if name != "auto":
        return name
    from hierloc.infer.predictor import GEOCLIP_BACKBONE, zeroshot_available

    return GEOCLIP_BACKBONE if zeroshot_available() else "efficientnet-lite0"


def _encoder(backbone: str):
    """-> (encode(list of PIL images) -> (B, F) float32, F)."""
    from hierloc.infer.predictor import GEOCLIP_BACKBONE

    if backbone == GEOCLIP_BACKBONE:
        from hierloc.infer import zeroshot as zs

        path = zs.image_path_for()

        def encode(images):
            return torch.nn.functional.normalize(path(path.preprocess(images)).float(), dim=-1)

        return encode, 512
    from hierloc.model.backbones import load_backbone

    bb = load_backbone(backbone)
    return (lambda images: bb.encode_images(images).float()), bb.feat_dim


def photo_features(folder, files, shas, backbone: str, batch: int = 16, progress: bool = True) -> torch.Tensor:
    """(N, F) features of the photos, each cached by its content's hash, encoded
    ``batch`` at a time with a progress bar; cached ones are not encoded again."""
    from tqdm import tqdm

    from hierloc.images import load_image
    from hierloc.paths import cache_dir

    cache = cache_dir() / "photo_features" / backbone.replace(":", "_").replace("/", "_")
    cache.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray | None] = [None] * len(files)
    todo = []
    for i, sha in enumerate(shas):
        f = cache / f"{sha}.npy"
        if f.exists():
            out[i] = np.load(f, allow_pickle=False)
        else:
            todo.append(i)
    if todo:
        encode, _ = _encoder(backbone)
        with tqdm(total=len(todo), desc=f"features ({backbone})", unit="photo", disable=not progress) as bar, \
                torch.inference_mode():
            for s in range(0, len(todo), batch):
                idx = todo[s:s + batch]
                feats = encode([load_image(Path(folder) / files[i]) for i in idx]).cpu().numpy()
                for i, v in zip(idx, feats):
                    tmp = cache / f"{shas[i]}.tmp.npy"
                    np.save(tmp, v.astype(np.float32))
                    tmp.replace(cache / f"{shas[i]}.npy")
                    out[i] = v
                bar.update(len(idx))
    return torch.from_numpy(np.stack(out).astype(np.float32))


# ---------------------------------------------------------------------------------------
# the prepared run
# ---------------------------------------------------------------------------------------
@dataclass
class Prepared:
    table: object              # PlaceTable: the photos' places and their ancestors
    photos: pd.DataFrame       # the usable photos, with truth (city_key) and fold (0..K-1) or split
    feats: torch.Tensor        # (N, F) in photos' order
    backbone: str
    folds: int                 # K > 1: every photo tested once; 1: the split's test side only


def default_folds(n_photos: int) -> int:
    return 5 if n_photos < FOLDS_BELOW else 1


def prepare_run(images, labels, out: Path, backbone: str = "auto", seed: int = 0, folds: int | None = None,
                progress: bool = True) -> Prepared:
    """Scan, split and encode (steps 1-4), writing photos.csv, problems.csv and split.json
    into the run folder; every step is repeatable and starts where it stopped. folds: K
    folds of whole location cells (None: 5 under 2,000 photos, else 1), or 1 for one
    split held out by location."""
    from hierloc.geo.places import default_places
    from hierloc.train.own_model import cell_folds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = scan(images, labels, progress)
    for line in summary_lines(df):
        log.info("%s", line)
        print(line)
    df[df["status"] != "ok"].to_csv(out / "problems.csv", index=False)
    ok = df[df["status"] == "ok"].reset_index(drop=True)
    geo = default_places()
    rows = truth_rows(ok["latitude"].to_numpy(), ok["longitude"].to_numpy()) if len(ok) else np.zeros(0, int)
    folds = default_folds(len(ok)) if folds is None else int(folds)
    if folds < 1:
        raise ValueError(f"--folds must be 1 or more, got {folds}")
    is_test, split = split_by_cells(ok["latitude"], ok["longitude"], seed) if len(ok) else (np.zeros(0, bool), {})
    check_enough(len(ok), len(np.unique(rows)), int((~is_test).sum()), int(is_test.sum()))
    if folds > 1:
        try:
            fold, split = cell_folds(ok["latitude"], ok["longitude"], folds, seed)
        except ValueError as exc:
            raise TooFewPhotos(f"{exc}: use fewer --folds (or --folds 1)") from None
        ok["fold"] = fold
        n_train, n_test = len(ok), len(ok)
    else:
        ok["split"] = np.where(is_test, "test", "train")
        n_train, n_test = int((~is_test).sum()), int(is_test.sum())
    ok["city_key"] = geo.key[rows]
    backbone = resolve_backbone(backbone)
    (out / "split.json").write_text(json.dumps({**split, "train": n_train, "test": n_test, "backbone": backbone},
                                               indent=2))
    feats = photo_features(images, ok["file"].tolist(), ok["sha256"].tolist(), backbone, progress=progress)
    table = geo.subset(rows, source=f"photos in {Path(images).name}")
    ok.to_csv(out / "photos.csv", index=False)
    return Prepared(table, ok, feats, backbone, folds)


# ---------------------------------------------------------------------------------------
# 5-6. train and evaluate
# ---------------------------------------------------------------------------------------
def run(prepared: Prepared, out: Path, images, cfg=None, fallback=None, world=None) -> tuple[Path, dict]:
    """Train the model of the run (RUN/last) and the table of every method on held-out
    photos (each fold's photos predicted by what was trained on the others; with one
    split, its test side): HierLoc and the baselines of train.own_model on the same
    features, the fallback profile (a Predictor, or a function that loads one); pooled, with each method's 95 % paired interval
    against HierLoc. With CLIP features (the shipped model's space) HierLoc is the shipped
    model sharpened on the photos (train.own_model.sharpen; ``world``: its guard photos,
    by default world_guard's). -> (checkpoint folder, the table as eval.json holds it)."""
    import time

    from hierloc.geo.places import default_places
    from hierloc.model.checkpoint import save_checkpoint
    from hierloc.train import own_model as M

    cfg = cfg or M.OwnConfig()
    out = Path(out)
    geo = default_places()
    base = shipped_base(prepared.backbone)
    if base is not None:  # CLIP features: the shipped model, sharpened on these photos
        base_model, base_table = base
        world = world if world is not None else M.world_guard(base_table)

        def fit(table, train_p):
            return M.sharpen(base_model, base_table, geo, train_p, cfg.seed, cfg.val_share, world)
    else:
        def fit(table, train_p):
            return M.fit(table, geo, train_p, cfg, prepared.backbone)
    ph = prepared.photos
    rows = np.array([geo.index(k) for k in ph["city_key"]])
    allp = M.photos_of(geo, prepared.feats, ph["latitude"], ph["longitude"], rows)
    if prepared.folds > 1:
        fold = ph["fold"].to_numpy()
        sides = [(fold != f, fold == f) for f in range(prepared.folds)]
        final_train = np.ones(len(ph), dtype=bool)
    else:
        test = ph["split"].to_numpy() == "test"
        sides = [(~test, test)]
        final_train = ~test
    t0 = time.perf_counter()
    order, preds, settings, reports = [], {}, [], []
    model = table = None
    for train_mask, test_mask in sides:
        train_p, test_p = allp.take(train_mask), allp.take(test_mask)
        table = geo.subset(train_p.rows[:, 3], source=prepared.table.source) if base is None else base[1]
        model, report = fit(table, train_p)
        got = {"hierloc": M.predict(model, table, test_p)}
        simple, chosen = M.baselines(geo, train_p, test_p, cfg.seed, cfg.val_share)
        got.update(simple)
        for name, p in got.items():
            preds.setdefault(name, []).append(p)
        order.append(np.flatnonzero(test_mask))
        settings.append(chosen)
        reports.append(_jsonable({k: v for k, v in report.items() if k not in ("validation_curve", "tried")}))
    seconds = {"folds_s": round(time.perf_counter() - t0, 1)}
    t1 = time.perf_counter()
    if prepared.folds > 1:  # the run's model: every photo
        table = prepared.table if base is None else base[1]
        model, report = fit(table, allp.take(final_train))
    seconds["final_model_s"] = round(time.perf_counter() - t1, 1)
    folder = save_checkpoint(model, table, out / "last",
                             extra={"train": {"recipe": "own-photos" if base is None else "sharpened",
                                              "images": str(images), "report": _jsonable(report),
                                              "photos": int(final_train.sum()), "backbone": prepared.backbone}})
    idx = np.concatenate(order)
    truth = allp.take(idx)
    pooled = {name: _pool(parts) for name, parts in preds.items()}
    if callable(fallback) and not hasattr(fallback, "predict_many"):
        fallback = fallback()  # loaded only now: its runtime's threads would slow the training down
    if fallback is not None:
        try:  # the run's features, when the profile reads photos with the same backbone
            answers = fallback.predict_features(allp.feats[torch.as_tensor(idx)], prepared.backbone, top_k=1)
        except ValueError:
            files = ph["file"].to_numpy()[idx]
            answers = fallback.predict_many([Path(images) / f for f in files], top_k=1, with_disk=False)
        pooled[fallback.profile] = {
            "keys": {lv: np.array([a.path[i]["key"] for a in answers], dtype=object).astype(str)
                     for i, lv in enumerate(LEVELS)},
            "lat": np.array([a.latitude for a in answers], dtype=float),
            "lon": np.array([a.longitude for a in answers], dtype=float)}
    res = table_of(pooled, truth, geo)
    res.update(photos={"train": int(final_train.sum()), "test": len(idx)}, folds=prepared.folds,
               settings={"hierloc": M.asdict(cfg), "per_fold": settings}, fits=reports, backbone=prepared.backbone)
    res["seconds"] = seconds
    return folder, res


def shipped_base(backbone: str):
    """(model, places) of the shipped GeoCLIP-space checkpoint when the photos' features are
    in its space (CLIP ViT-L/14 + GeoCLIP's head) and it is there; else None."""
    from hierloc.infer.predictor import GEOCLIP_BACKBONE, geoclip_checkpoint
    from hierloc.model.checkpoint import load_checkpoint

    if backbone != GEOCLIP_BACKBONE:
        return None
    from hierloc.paths import CHECKPOINTS_DIR

    shipped = CHECKPOINTS_DIR / "hierloc-geoclip"
    ckpt = shipped if (shipped / "config.json").exists() else geoclip_checkpoint()
    if ckpt is None:
        log.warning("no shipped GeoCLIP-space checkpoint: HierLoc is trained on these photos alone")
        return None
    model, table, _ = load_checkpoint(ckpt)
    return model, table


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _pool(parts: list[dict]) -> dict:
    return {"keys": {lv: np.concatenate([p["keys"][lv] for p in parts]) for lv in LEVELS},
            "lat": np.concatenate([p["lat"] for p in parts]), "lon": np.concatenate([p["lon"] for p in parts])}


def table_of(pooled: dict, truth, geo) -> dict:
    """Metrics of each method on the same photos, and each one's paired difference to
    HierLoc per level and in GeoScore (95 % interval)."""
    from hierloc.eval.evaluate import reverse_geocoded_keys
    from hierloc.eval.metrics import GEOSCORE_SCALE_KM, all_metrics, level_hits, paired_difference
    from hierloc.geo.distance import haversine_km

    true_keys = truth.keys(geo)
    methods, paired, hits, scores = {}, {}, {}, {}
    for name, p in pooled.items():
        m = all_metrics(p["lat"], p["lon"], truth.lat, truth.lon, pred_keys=p["keys"], true_keys=true_keys,
                        rg_keys=reverse_geocoded_keys(p["lat"], p["lon"]))
        m.pop("n", None)
        methods[name] = m
        hits[name] = level_hits(p["keys"], true_keys)
        scores[name] = 5000.0 * np.exp(-haversine_km(p["lat"], p["lon"], truth.lat, truth.lon) / GEOSCORE_SCALE_KM)
    for name in pooled:
        if name == "hierloc":
            continue
        d = scores["hierloc"] - scores[name]
        half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        paired[name] = {**{lv: paired_difference(hits["hierloc"][lv], hits[name][lv]) for lv in LEVELS},
                        "geoscore": {"diff": round(float(d.mean()), 1), "low": round(float(d.mean() - half), 1),
                                     "high": round(float(d.mean() + half), 1)}}
    return {"methods": methods, "hierloc_minus": paired}


LABELS = {"hierloc": "HierLoc", "knn": "nearest training photos (k-NN vote)",
          "linear": "linear classifier per level", "most_common": "always the most common place",
          "preview": "offline preview (untrained)", "zero-shot": "zero-shot (CLIP + GeoCLIP)"}


def _verdict(p: dict) -> str:
    if not np.isfinite(p["low"]):
        return ""
    return "ahead" if p["low"] > 0 else "behind" if p["high"] < 0 else "level"


def markdown(res: dict) -> str:
    from hierloc.eval.metrics import THRESHOLDS_KM

    km = " | ".join(f"{t} km" for t in THRESHOLDS_KM)
    n, k = res["photos"]["test"], res.get("folds", 1)
    how = (f"{n} photos, {k} folds of whole location cells: each photo predicted once, by what was trained on "
           f"the other folds" if k > 1 else f"{n} photos held out by location (trained on {res['photos']['train']})")
    lines = [f"{how}; features: {res['backbone']}. Real photos, not the proxy.", "",
             f"| method | country | region | sub-region | city | {km} | median km | GeoScore |",
             "|---" * (7 + len(THRESHOLDS_KM)) + "|"]
    for name, m in res["methods"].items():
        acc = " | ".join("-" if np.isnan(m["accuracy"].get(lv, np.nan)) else f"{100 * m['accuracy'][lv]:.1f}"
                         for lv in LEVELS)
        within = " | ".join(f"{100 * m['acc_km'][str(t)]:.1f}" for t in THRESHOLDS_KM)
        lines.append(f"| {LABELS.get(name, name)} | {acc} | {within} | {m['median_km']:.0f} | {m['geoscore']:.0f} |")
    lines += ["", "HierLoc minus each method on the same photos (95 % paired interval; ahead: above zero, level: "
              "it holds zero, behind: below zero):", "",
              "| method | country | region | GeoScore |", "|---|---|---|---|"]
    for name, p in res["hierloc_minus"].items():
        cells = [f"{p[lv]['diff']:+.1f} [{p[lv]['low']:+.1f}, {p[lv]['high']:+.1f}] {_verdict(p[lv])}"
                 for lv in LEVELS[:2]]
        g = p["geoscore"]
        cells.append(f"{g['diff']:+.0f} [{g['low']:+.0f}, {g['high']:+.0f}] {_verdict(g)}")
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy per level in %, each level over the photos whose place at that level has a name; "
              "distances from the true GPS. The places of a prediction are its own."]
    return "\n".join(lines)
