"""`train --images DIR`: HierLoc on a folder of your own geotagged photos.

1. Scan (:func:`scan`): every file of the folder, read as predict reads it; its GPS from a
   labels file (file/latitude/longitude, or Im2GPS3k's IMG_ID/LAT/LON) or else its EXIF;
   duplicates found by content. Every file gets a status and a reason; the run folder
   keeps them (photos.csv, problems.csv) and the screen gets one line per kind.
2. Truth: the benchmark's protocol (the nearest GeoNames point of the GPS, its parents).
3. Split held out by location (:func:`split_by_cells`): whole cells of the globe go to the
   test split, chosen by the seed (saved in split.json); finer cells when the photos fall
   in too few.
4. Features: the chosen backbone, cached by file content (HIERLOC_CACHE/photo_features),
   batched, with a progress bar; an interrupted run starts where it stopped.
5. The hierarchy: the places the photos cover and their ancestors (a subset of the
   offline GeoNames hierarchy, keyed as OSV-5M keys it). HierLoc is trained on it with
   :data:`IMAGES_DEFAULTS` (train.loop; resumable).
6. Evaluation on the held-out photos, same photos, same features (:func:`evaluate_run`):
   HierLoc's beam search, k-nearest-neighbour retrieval over the training photos, always
   the most common place per level, and the profile that answers without this model.
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
KNN_K = 1

IMAGES_DEFAULTS = {
    "data": "images", "embed_dim": 64, "hidden_dim": 128, "dropout": 0.0, "attention": False,
    "place_features": ["image", "location"], "batch_size": 64, "lr": 3e-3, "manifold_lr": 3e-3,
    "epochs": 60.0, "init": "pca", "val_photos": 0, "log_every": 25, "ckpt_every": 100, "minutes": 30.0,
}
"""What `train --images` sets before any --set: a small model for a few hundred to a few
thousand photos (the GeoCLIP-space recipe's PCA start, no cross-level attention), every
place of the small hierarchy scored at every step."""


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


def split_by_cells(lat, lon, seed: int = 0, share: float = TEST_SHARE) -> tuple[np.ndarray, dict]:
    """Test split by location: whole cells (the largest size in CELL_SIZES_DEG that gives
    at least 5 cells) to the test side, in an order fixed by the seed, until about
    ``share`` of the photos. Returns (is_test (N,), what was done)."""
    from hierloc.data.geoclip_space import cell_of

    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    for size in CELL_SIZES_DEG:
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
# the prepared run: what train.loop reads (data = "images")
# ---------------------------------------------------------------------------------------
@dataclass
class Prepared:
    table: object              # PlaceTable: the photos' places and their ancestors
    photos: pd.DataFrame       # the usable photos, with split and truth rows
    feats: torch.Tensor        # (N, F) in photos' order
    backbone: str


def prepare_run(images, labels, out: Path, backbone: str = "auto", seed: int = 0,
                progress: bool = True) -> Prepared:
    """Scan, split and encode (steps 1-4), writing photos.csv, problems.csv and split.json
    into the run folder; every step is repeatable and starts where it stopped."""
    from hierloc.geo.places import default_places

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
    is_test, split = split_by_cells(ok["latitude"], ok["longitude"], seed) if len(ok) else (np.zeros(0, bool), {})
    check_enough(len(ok), len(np.unique(rows)), int((~is_test).sum()), int(is_test.sum()))
    ok["split"] = np.where(is_test, "test", "train")
    ok["city_key"] = geo.key[rows]
    backbone = resolve_backbone(backbone)
    (out / "split.json").write_text(json.dumps({**split, "train": int((~is_test).sum()), "test": int(is_test.sum()),
                                                "backbone": backbone}, indent=2))
    feats = photo_features(images, ok["file"].tolist(), ok["sha256"].tolist(), backbone, progress=progress)
    table = geo.subset(rows, source=f"photos in {Path(images).name}")
    ok.to_csv(out / "photos.csv", index=False)
    return Prepared(table, ok, feats, backbone)


def photo_set(table, photos: pd.DataFrame, feats: torch.Tensor, split: str):
    """A PhotoSet of one split: its features, GPS and true keys in ``table``."""
    from hierloc.data.synthetic import PhotoSet

    sel = np.flatnonzero(photos["split"].to_numpy() == split)
    city = [table.index(k) for k in photos["city_key"].to_numpy()[sel]]
    keys = {lv: table.key[table.ancestor_at(np.asarray(city), i)].astype(str) for i, lv in enumerate(LEVELS)}
    names = {lv: table.name[table.ancestor_at(np.asarray(city), i)].astype(str) for i, lv in enumerate(LEVELS)}
    return PhotoSet(np.asarray(photos["file"])[sel], feats[torch.as_tensor(sel, dtype=torch.long)],
                    photos["latitude"].to_numpy(float)[sel], photos["longitude"].to_numpy(float)[sel], keys, names)


# ---------------------------------------------------------------------------------------
# 6. evaluation
# ---------------------------------------------------------------------------------------
def _metrics(table, lat, lon, test, pred_keys=None):
    from hierloc.eval.evaluate import reverse_geocoded_keys
    from hierloc.eval.metrics import all_metrics

    rg = reverse_geocoded_keys(lat, lon)
    m = all_metrics(lat, lon, test.lat_deg, test.lon_deg, pred_keys=pred_keys or rg, true_keys=test.keys, rg_keys=rg)
    return m


def evaluate_run(checkpoint, prepared: Prepared, images, fallback=None, beam: int = 10) -> dict:
    """The table of the run: every method on the held-out photos (see the module docstring)."""
    from hierloc.eval.evaluate import keys_of_paths, predict_features
    from hierloc.model.checkpoint import load_checkpoint

    model, table, _ = load_checkpoint(checkpoint)
    train = photo_set(table, prepared.photos, prepared.feats, "train")
    test = photo_set(table, prepared.photos, prepared.feats, "test")
    methods = {}
    best, _ = predict_features(model, table, test.feats, beam=beam)
    rows = best[:, 3] + table.level_slice("city").start
    methods["hierloc"] = _metrics(table, table.lat_deg[rows], table.lon_deg[rows], test, keys_of_paths(table, best))
    # k-nearest-neighbour retrieval over the training photos (cosine): the neighbour's GPS
    a = torch.nn.functional.normalize(test.feats, dim=-1)
    b = torch.nn.functional.normalize(train.feats, dim=-1)
    nn_idx = (a @ b.T).argmax(1).numpy()
    methods["knn"] = _metrics(table, train.lat_deg[nn_idx], train.lon_deg[nn_idx], test)
    # always the most common training place of each level; as GPS the centroid of the city
    # reached by going down the most common places (the most common region of the most
    # common country, and so on), so that the GPS lies in the place it names
    common = {lv: pd.Series(train.keys[lv]).value_counts().index[0] for lv in LEVELS}
    inside = np.ones(len(train), dtype=bool)
    for lv in LEVELS:
        top = pd.Series(train.keys[lv][inside]).value_counts().index[0]
        inside &= train.keys[lv] == top
    c_row = table.index(top)
    n = len(test)
    methods["most_common"] = _metrics(table, np.full(n, table.lat_deg[c_row]), np.full(n, table.lon_deg[c_row]), test,
                                      {lv: np.full(n, common[lv], dtype=object) for lv in LEVELS})
    if fallback is not None:
        preds = fallback.predict_many([Path(images) / f for f in test.ids], beam=beam, top_k=1, with_disk=False)
        lat = np.array([p.latitude for p in preds], dtype=float)
        lon = np.array([p.longitude for p in preds], dtype=float)
        keys = {lv: np.array([p.path[i]["key"] for p in preds], dtype=object) for i, lv in enumerate(LEVELS)}
        methods[fallback.profile] = _metrics(table, lat, lon, test, keys)
    for m in methods.values():
        m.pop("n", None)
    return {"photos": {"train": len(train), "test": n}, "methods": methods,
            "knn_k": KNN_K, "beam": beam, "backbone": prepared.backbone}


LABELS = {"hierloc": "HierLoc (beam search)", "knn": "nearest training photo (k-NN retrieval)",
          "most_common": "always the most common place", "preview": "offline preview (untrained)",
          "zero-shot": "zero-shot (CLIP + GeoCLIP)"}


def markdown(res: dict) -> str:
    from hierloc.eval.metrics import THRESHOLDS_KM

    km = " | ".join(f"{t} km" for t in THRESHOLDS_KM)
    lines = [f"Held-out photos: {res['photos']['test']} (trained on {res['photos']['train']}), held out by location; "
             f"features: {res['backbone']}.", "",
             f"| method | country | region | sub-region | city | {km} | median km | GeoScore |",
             "|---" * (7 + len(THRESHOLDS_KM)) + "|"]
    for name, m in res["methods"].items():
        acc = " | ".join("-" if np.isnan(m["accuracy"].get(lv, np.nan)) else f"{100 * m['accuracy'][lv]:.1f}"
                         for lv in LEVELS)
        within = " | ".join(f"{100 * m['acc_km'][str(t)]:.1f}" for t in THRESHOLDS_KM)
        lines.append(f"| {LABELS.get(name, name)} | {acc} | {within} | {m['median_km']:.1f} | {m['geoscore']:.0f} |")
    lines += ["", "Accuracy per level in %, each level over the held-out photos whose place at that level has a "
              "name; distances from the true GPS. The places of a prediction are its own (HierLoc, the profile) or "
              "those of its GPS by the benchmark's reverse geocoding (nearest training photo)."]
    return "\n".join(lines)
