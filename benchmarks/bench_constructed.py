"""How far one point per place goes in GeoCLIP's space, before any training.

A HierLoc model scores each place by its distance to the photo's point, one point per
place. Here the points are constructed, not learned: every place along a direction of
GeoCLIP's space at a fixed radius per level (countries 1 .. cities 4), the photo along its
own feature at radius 3.5, searched by the beam (10) or flat (every city). Two choices of
direction: the place centroid's location feature, or the mean unit feature of the tree
posterior's support points below the place (its cities and the GeoCLIP gallery points
filed under them). Beside them, on the same photos: GeoCLIP's gallery retrieval, flat
nearest city and zero-shot's tree posterior. GeoCLIP-space proxy, not real photos.

    python benchmarks/bench_constructed.py [--photos 1000] [--split test] [--level 1.0]
"""

from __future__ import annotations

import argparse
import json

import torch


def constructed(space, directions, search: str, beam: int = 10):
    from hierloc.eval import geoclip_bench as gb
    from hierloc.eval.evaluate import keys_of_paths
    from hierloc.infer import zeroshot as zs
    from hierloc.infer.beam import Hierarchy, beam_search, flat_search
    from hierloc.model.geometry import Geometry

    tree = Hierarchy.from_table(space.table)
    points = zs.place_points(directions)
    find = beam_search if search == "beam" else flat_search

    def decode(space, u):
        with torch.inference_mode():
            paths = torch.cat([find(Geometry("lorentz", 1.0), zs.photo_points(u[i:i + 1024]), points, tree, beam).best
                               for i in range(0, len(u), 1024)]).numpy()
        rows = paths[:, 3] + space.table.level_slice("city").start
        return gb.Decoded(keys_of_paths(space.table, paths), space.table.lat_deg[rows], space.table.lon_deg[rows])

    return decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--split", default="test", choices=["all", "train", "test"])
    ap.add_argument("--level", type=float, default=1.0, help="noise level (1: calibrated)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from hierloc import LEVELS
    from hierloc.eval import geoclip_bench as gb

    space = gb.Space()
    support = space.posterior.place_directions()
    decoders = {"GeoCLIP gallery retrieval": gb.decode_gallery, "flat nearest city": gb.decode_flat_city,
                "zero-shot (tree posterior)": gb.decode_tree_posterior,
                "centroid points, beam": constructed(space, space.loc, "beam"),
                "centroid points, flat": constructed(space, space.loc, "flat"),
                "support-mean points, beam": constructed(space, support, "beam"),
                "support-mean points, flat": constructed(space, support, "flat")}
    out = {}
    for where in ("cities", "gallery"):
        res = gb.run(n_photos=args.photos, where=where, levels=(args.level,), decoders=decoders, split=args.split,
                     space=space)
        out[where] = {name: {"accuracy": m["accuracy"], "geoscore": m["geoscore"]}
                      for name, m in res["levels"][0]["results"].items()}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"GeoCLIP-space proxy, {args.photos} photos per kind, split {args.split}, noise x{args.level:g}\n")
    print("| locations | decoder | country | region | sub-region | city | GeoScore |\n|---|---|---|---|---|---|---|")
    for where, rows in out.items():
        for name, m in rows.items():
            acc = " | ".join(f"{100 * m['accuracy'][lv]:.1f}" for lv in LEVELS)
            print(f"| {where} | {name} | {acc} | {m['geoscore']:.0f} |")


if __name__ == "__main__":
    main()
