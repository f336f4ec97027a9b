"""A GeoCLIP-space checkpoint beside every built-in decoder, on both photo sources and
both splits, in one run (one Space, the same photos as `bench geoclip`).

    python benchmarks/bench_recipe.py CHECKPOINT [--photos 1000] [--out DIR] [--noise 0,0.5,1,1.5]

Splits: ``train`` (new locations in the cells training draws from: OSV-5M's protocol,
test photos from the same places as training) and ``test`` (held-out cells: places with
no training photo). Writes DIR/{cities,gallery}-{train,test}.{json,md} and prints, at the
calibrated level, the checkpoint's beam and flat search against the best baseline
(flat nearest city, GeoCLIP gallery retrieval) at country and region. A GeoCLIP-space
proxy, not accuracy on real photos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    from hierloc.eval import geoclip_bench as gb
    from hierloc.model.checkpoint import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--label", default="HierLoc")
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--noise", default="0,0.5,1,1.5")
    ap.add_argument("--splits", default="train,test")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    levels = tuple(float(v) for v in args.noise.split(","))
    model, table, _ = load_checkpoint(args.checkpoint)
    space = gb.Space()
    decoders = dict(gb.DECODERS)
    decoders[f"{args.label}, beam"] = gb.model_decoder(model, table, name=args.checkpoint)
    decoders[f"{args.label}, flat"] = gb.model_decoder(model, table, search="flat", name=args.checkpoint)
    summary = {}
    for split in args.splits.split(","):
        for where in ("cities", "gallery"):
            res = gb.run(n_photos=args.photos, where=where, levels=levels, decoders=decoders, seed=args.seed,
                         space=space, split=split)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{where}-{split}.json").write_text(json.dumps(res, indent=2))
                (args.out / f"{where}-{split}.md").write_text(gb.markdown(res) + "\n")
            cal = next((b for b in res["levels"] if b["level"] == 1.0), None)
            if cal is None:
                continue
            r = cal["results"]
            row = {}
            for name in (f"{args.label}, beam", f"{args.label}, flat", "zero-shot, tree posterior (shipped)",
                         *gb.BASELINES):
                row[name] = {lv: round(100 * r[name]["accuracy"][lv], 1) for lv in ("country", "region")}
                row[name]["geoscore"] = round(r[name]["geoscore"])
            best = {lv: max(row[b][lv] for b in gb.BASELINES) for lv in ("country", "region")}
            row["beam ahead of the best baseline"] = {lv: round(row[f"{args.label}, beam"][lv] - best[lv], 1)
                                                      for lv in ("country", "region")}
            row["beam against each baseline, paired, 95 % interval"] = {
                b: {lv: [g["diff"], g["low"], g["high"]] for lv, g in per_level.items() if lv in ("country", "region")}
                for b, per_level in cal["paired"][f"{args.label}, beam"].items()}
            summary[f"{where}, {split}"] = row
    print(json.dumps(summary, indent=2))
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
