"""A custom gallery on the GeoCLIP-space benchmark (a proxy, not real photos): pseudo-photos
taken inside one region, decoded by zero-shot's tree posterior before and after adding
that region's own locations to its support points (what `--gallery` / HIERLOC_GALLERY do).

The region's locations: population-weighted cities inside it, 3 km of jitter (seed 1),
written as a CSV, the form a user gives; the test photos: other draws inside it (seed 2),
at the calibrated noise level.

    python benchmarks/bench_gallery.py [--region Utah_US] [--locations 3000] [--photos 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from hierloc.eval import geoclip_bench as gb
    from hierloc.infer.zeroshot import custom_gallery

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", action="append", help="region keys (default: Utah_US and Bavaria_DE)")
    ap.add_argument("--locations", type=int, default=3000)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    space = gb.Space()
    out = {"benchmark": "GeoCLIP-space proxy; not accuracy on real photos", "noise": args.noise, "regions": {}}
    for region in args.region or ["Utah_US", "Bavaria_DE"]:
        glat, glon = gb.region_locations(space.table, region, args.locations, seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / f"{region}.csv"
            csv.write_text("latitude,longitude\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in zip(glat, glon)))
            extra = custom_gallery(csv)
        lat, lon = gb.region_locations(space.table, region, args.photos, seed=2)
        truth = space.truth(lat, lon)
        u = gb.photo_features(space.encoder, lat, lon, gb.CALIBRATED.at(args.noise), seed=3)
        decoders = {"GeoCLIP gallery retrieval": gb.decode_gallery, "flat nearest city": gb.decode_flat_city,
                    "zero-shot (before)": gb.decode_tree_posterior,
                    f"zero-shot + the region's {len(extra):,} locations (after)": gb.gallery_decoder(extra)}
        rows = {}
        for name, fn in decoders.items():
            m = gb.score(space, fn(space, u), lat, lon, truth)
            rows[name] = {"accuracy": {k: round(v, 4) for k, v in m["accuracy"].items()},
                          "acc_km": {k: round(v, 4) for k, v in m["acc_km"].items()},
                          "median_km": round(m["median_km"], 1), "geoscore": round(m["geoscore"], 1)}
        out["regions"][region] = rows
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for region, rows in out["regions"].items():
            print(region)
            for name, m in rows.items():
                acc = " ".join(f"{k} {100 * v:.1f}" for k, v in m["accuracy"].items())
                print(f"  {name}: {acc}; 25 km {100 * m['acc_km']['25']:.1f}; median {m['median_km']} km; "
                      f"GeoScore {m['geoscore']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
