"""How much of what the features allow a GeoCLIP-space checkpoint already gets: its beam
search beside posteriors read straight off its own support attention, on the photos of
`bench geoclip` (a GeoCLIP-space proxy, not accuracy on real photos).

The support head (model.hierloc) attends over support points with weights
softmax(T cos + prior) over each photo's top 256. Summed per place, those weights are a
posterior over each level's places; its argmax per level is what the head's evidence
supports, without the hyperbolic point the checkpoint answers with:

- **attention posterior, learned prior**: the checkpoint's own T and prior;
- **attention posterior, gallery points only**: the same over GeoCLIP's gallery points
  alone, an *oracle* on gallery locations (it knows the photo stands on a gallery point,
  which no decoder of a real photo knows), so the most a decoder of these features could
  expect there; on city locations it shows what leaving the cities' own points out costs;
- **Bayes decoder of the photos' distribution** (model-free, `geoclip_bench.bayes_decoder`):
  the exact isotropic-noise likelihood over the support points times the prior the photos
  are drawn from (half gallery points, half cities by population, in the split's cells).
  It knows where photos are drawn, not which kind a photo is: what any decoder trained on
  this distribution can expect, on average; on one draw of photos it may be beaten by luck.

Printed beside GeoCLIP gallery retrieval (the top-1 gallery point), zero-shot and the
checkpoint's beam search, on the same photos in the same run:

    python benchmarks/bench_ceiling.py [--checkpoint checkpoints/hierloc-geoclip] [--where gallery]
        [--split train] [--photos 1000] [--seed 0] [--noise 1] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    from hierloc import LEVELS
    from hierloc.eval import geoclip_bench as gb
    from hierloc.model.checkpoint import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/hierloc-geoclip")
    ap.add_argument("--where", default="gallery", choices=("cities", "gallery"))
    ap.add_argument("--split", default="train", choices=("train", "test", "all"))
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, table, _ = load_checkpoint(args.checkpoint)
    if model.config.photo_head != "support":
        ap.error(f"{args.checkpoint} has no support attention to read (photo_head {model.config.photo_head!r})")
    space = gb.Space(table)
    decoders = {"GeoCLIP gallery retrieval": gb.decode_gallery,
                "zero-shot, tree posterior (shipped)": gb.decode_tree_posterior,
                "HierLoc checkpoint, beam": gb.model_decoder(model, table, name=args.checkpoint),
                "attention posterior, learned prior": gb.attention_posterior_decoder(model, table),
                "attention posterior, gallery points only (oracle on gallery locations)":
                    gb.attention_posterior_decoder(model, table, gallery_only=True)}
    if args.noise > 0:
        decoders["Bayes decoder of the photos' distribution (model-free)"] = gb.bayes_decoder(
            gb.CALIBRATED.at(args.noise), "all" if args.split == "all" else args.split)
    res = gb.run(args.photos, args.where, levels=(args.noise,), decoders=decoders, seed=args.seed, space=space,
                 split=args.split)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['photos']} {args.where} locations, split {args.split}, seed {args.seed}, x{args.noise:g} "
          f"(GeoCLIP-space proxy, not real photos)")
    print(f"| decoder | country | region | sub-region | city | GeoScore |\n|---|---|---|---|---|---|")
    for name, r in res["levels"][0]["results"].items():
        acc = [f"{100 * r['accuracy'][lv]:.1f}" for lv in LEVELS]
        print(f"| {name} | {' | '.join(acc)} | {r['geoscore']:.0f} |")
    print("\n" + "\n".join(gb.paired_lines(res["levels"][0]["paired"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
