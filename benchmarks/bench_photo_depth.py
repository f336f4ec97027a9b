"""Where does the photo sit in the atlas? The three centroids compared on GeoCLIP-space
pseudo-photos (a proxy: GeoCLIP's real location encoder, calibrated noise; see the README).

For each photo, zero-shot's tree posterior gives a distribution over cities; the photo's
point is its weighted centroid (atlas.centroid, of each kind). The depth the distribution
gives is the deepest place of the answer's path holding more than half the probability
(the words under the disk); the depth the picture gives is the place of the path (or the
Earth's point) nearest the photo's point. The share of photos where the two agree, per
kind and noise level, is what chose the median (viz.atlas_view.CENTROID).

    python benchmarks/bench_photo_depth.py [--photos 300] [--noise 0.5,1] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None) -> int:
    from hierloc.eval import geoclip_bench as gb
    from hierloc.manifold import atlas as A
    from hierloc.viz import atlas_view as V

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--noise", default="0.5,1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    space = gb.Space()
    table, post = space.table, space.posterior
    atlas = A.atlas_for(table)
    c0 = table.level_slice(3).start
    out = {"photos": args.photos, "seed": args.seed, "levels": {}}
    for level in (float(v) for v in args.noise.split(",")):
        lat, lon = gb.sample_locations(args.photos, "cities", seed=args.seed)
        u = gb.photo_features(space.encoder, lat, lon, gb.CALIBRATED.at(level), seed=args.seed)
        res = post.search(u, 10)
        row = {}
        for kind in ("lorentz", "frechet", "median"):
            agree, t0 = 0, time.perf_counter()
            for b in range(len(u)):
                path = [int(res.paths[b, 0, lv]) + table.level_slice(lv).start for lv in range(4)]
                ph = V.place_photo(atlas, table, path, res.cities[0][b].numpy() + c0, res.cities[1][b].numpy(), kind)
                d = [ph.point.rho] + [float(atlas.dist_point(ph.point, r)) for r in path]
                agree += int(int(np.argmin(d)) - 1 == ph.depth)
            row[kind] = {"agree": round(agree / len(u), 3),
                         "ms_per_photo": round((time.perf_counter() - t0) * 1000 / len(u), 1)}
        out["levels"][f"x{level:g}"] = row
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for lv, row in out["levels"].items():
            print(lv, "  ".join(f"{k}: {v['agree']:.1%} ({v['ms_per_photo']} ms)" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
