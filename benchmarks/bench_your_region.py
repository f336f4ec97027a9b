"""The shipped model sharpened on your region, on the GeoCLIP-space benchmark (a proxy, not
real photos): pseudo-photos inside one region play "your photos"; they are split by
location (whole 0.25-degree cells, about 25 km) into the photos you train with and the photos it is
tested on; what `train --images --backbone auto` does with CLIP features
(train.own_model.sharpen: your photos' locations become support points of
checkpoints/hierloc-geoclip, their prior offset picked on a validation split of them).

Beside it, on the same test photos: the shipped checkpoint unchanged, zero-shot, and
zero-shot with the same photos' locations as a custom gallery (`--gallery`), with each
one's 95 % paired interval against the sharpened model.

    python benchmarks/bench_your_region.py [--region Utah_US] [--photos 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SHARPENED = "HierLoc + your photos"


def main(argv=None) -> int:
    from hierloc import LEVELS
    from hierloc.data.pseudo_photos import CALIBRATED, photo_features
    from hierloc.eval import geoclip_bench as gb
    from hierloc.eval.metrics import GEOSCORE_SCALE_KM, level_hits, paired_difference
    from hierloc.geo.distance import haversine_km
    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.paths import CHECKPOINTS_DIR
    from hierloc.train import own_model as M

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", action="append", help="region keys (default: Utah_US and Bavaria_DE)")
    ap.add_argument("--photos", type=int, default=1000, help="pseudo-photos drawn inside the region")
    ap.add_argument("--test-share", type=float, default=0.4, help="share of the location cells tested on")
    ap.add_argument("--cell-deg", type=float, default=0.25, help="size of the location cells split on")
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--checkpoint", default=str(CHECKPOINTS_DIR / "hierloc-geoclip"))
    ap.add_argument("--world-photos", type=int, default=1000, help="pseudo-photos over the world, checked after")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base, table, _ = load_checkpoint(args.checkpoint)
    space = gb.Space(table)
    # the world, to see that a sharpened model has not forgotten it: bench geoclip's seed-0 photos
    wlat, wlon = gb.sample_locations(args.world_photos, "cities", 0, table=table, split="train")
    world_truth = space.truth(wlat, wlon)
    world_u = photo_features(space.encoder, wlat, wlon, CALIBRATED.at(args.noise), seed=1)
    out = {"benchmark": "GeoCLIP-space proxy; not accuracy on real photos", "noise": args.noise,
           "checkpoint": args.checkpoint, "regions": {}}
    for region in args.region or ["Utah_US", "Bavaria_DE"]:
        t0 = time.perf_counter()
        lat, lon = gb.region_locations(space.table, region, args.photos, seed=args.seed + 1)
        u = photo_features(space.encoder, lat, lon, CALIBRATED.at(args.noise), seed=args.seed + 3)
        rows = space.rg.lookup(lat, lon)
        from hierloc.data.geoclip_space import cell_of

        cell = np.asarray(cell_of(lat, lon, args.cell_deg), dtype=np.int64)
        is_test = np.isin(cell, np.random.default_rng(args.seed).permutation(np.unique(cell))[
            :int(round(args.test_share * len(np.unique(cell))))])
        split = {"cell_deg": args.cell_deg, "cells": int(len(np.unique(cell))), "seed": args.seed}
        photos = M.photos_of(table, u, lat, lon, rows, cell)
        yours, test = photos.take(~is_test), photos.take(is_test)
        sharpened, report = M.sharpen(base, table, table, yours, seed=args.seed)
        truth = test.keys(table)
        your_latlon = np.stack([yours.lat, yours.lon], 1)
        decoders = {SHARPENED: gb.model_decoder(sharpened, table),
                    "HierLoc checkpoint unchanged": gb.model_decoder(base, table),
                    "zero-shot + your photos as gallery": gb.gallery_decoder(your_latlon),
                    "zero-shot": gb.decode_tree_posterior,
                    "GeoCLIP gallery retrieval": gb.decode_gallery}
        results, hits, scores = {}, {}, {}
        for name, fn in decoders.items():
            dec = fn(space, test.feats)
            m = gb.score(space, dec, test.lat, test.lon, truth)
            results[name] = {"accuracy": {k: round(v, 4) for k, v in m["accuracy"].items()},
                             "median_km": round(m["median_km"], 1), "geoscore": round(m["geoscore"], 1)}
            hits[name] = level_hits(dec.keys, truth)
            scores[name] = 5000 * np.exp(-haversine_km(dec.lat_deg, dec.lon_deg, test.lat, test.lon)
                                         / GEOSCORE_SCALE_KM)
        minus = {}
        for name in decoders:
            if name == SHARPENED:
                continue
            d = scores[SHARPENED] - scores[name]
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            minus[name] = {**{lv: paired_difference(hits[SHARPENED][lv], hits[name][lv]) for lv in LEVELS},
                           "geoscore": {"diff": round(float(d.mean()), 1), "low": round(float(d.mean() - half), 1),
                                        "high": round(float(d.mean() + half), 1)}}
        world = {}
        for name, model in ((SHARPENED, sharpened), ("HierLoc checkpoint unchanged", base)):
            m = gb.score(space, gb.model_decoder(model, table)(space, world_u), wlat, wlon, world_truth)
            world[name] = {"accuracy": {k: round(v, 4) for k, v in m["accuracy"].items()},
                           "geoscore": round(m["geoscore"], 1)}
        out["regions"][region] = {"photos": {"yours": len(yours), "test": len(test)}, "world": world,
                                  "split": split, "sharpen": report,
                                  "results": results, "sharpened_minus": minus,
                                  "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for region, r in out["regions"].items():
        print(f"{region}: {r['photos']['yours']} of your photos, {r['photos']['test']} test photos "
              f"(held out by {r['split']['cell_deg']}-degree cells); weights {r['sharpen']['weights']}, "
              f"floor {r['sharpen']['floor']}")
        print("| method | country | region | sub-region | city | median km | GeoScore |")
        print("|---|---|---|---|---|---|---|")
        for name, m in r["results"].items():
            acc = " | ".join(f"{100 * m['accuracy'][lv]:.1f}" for lv in LEVELS)
            print(f"| {name} | {acc} | {m['median_km']:.1f} | {m['geoscore']:.0f} |")
        print(f"\nThe world ({args.world_photos} pseudo-photos at cities, bench geoclip's seed 0):")
        for name, m in r["world"].items():
            acc = ", ".join(f"{lv} {100 * m['accuracy'][lv]:.1f}" for lv in LEVELS)
            print(f"- {name}: {acc}; GeoScore {m['geoscore']:.0f}")
        print(f"\n{SHARPENED} minus each (95 % paired interval):")
        for name, p in r["sharpened_minus"].items():
            cells = ", ".join(f"{lv} {p[lv]['diff']:+.1f} [{p[lv]['low']:+.1f}, {p[lv]['high']:+.1f}]"
                              for lv in LEVELS)
            g = p["geoscore"]
            print(f"- {name}: {cells}; GeoScore {g['diff']:+.0f} [{g['low']:+.0f}, {g['high']:+.0f}]")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
