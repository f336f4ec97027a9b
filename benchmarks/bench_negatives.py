"""Which negatives a photo head in GeoCLIP's space can be trained with: a probe.

The model is the simplest HierLoc with no free anchors, in GeoCLIP's full 512 dimensions:
every place fixed along the mean unit feature of the tree posterior's support points below
it (its cities and the GeoCLIP gallery points filed under them), at radius 1, 2, 3, 4 for
countries .. cities (radius per place optionally learned from two numbers of its support:
how many points, how spread), and the photo at exp_0(r u + r MLP(u)), a residual MLP whose
last layer starts at zero. At step 0 it is `bench_constructed.py`'s "support-mean points".
Training photos come from a bank of train-cell locations (cities and gallery, their clean
and displaced GeoCLIP features computed once), with fresh isotropic noise at every step
(level uniform in x0..x1.5), the loss softmax(-d^2 / tau) per level. What differs between
runs is the city level's negatives:

    --negatives sampled   true cities + their siblings + 2,048 uniform others, the uniform
                          ones weighted by (rest / drawn) (train.loop.NegativeSampler's
                          estimator, the one the shipped checkpoint was trained with)
    --negatives mined     the same, plus each photo's --mine cities of largest cosine
    --negatives full      every one of the 142k cities (exact; slow on a CPU)

Accuracy (GeoCLIP-space proxy, x1, not real photos) is measured at step 0, every
--eval-every steps and at the end, on new locations in the training cells (OSV-5M-like)
and/or in held-out cells. The README's figures:

    python benchmarks/bench_negatives.py --negatives sampled --steps 660 --threads 1
    python benchmarks/bench_negatives.py --negatives mined --steps 180 --threads 1
    python benchmarks/bench_negatives.py --negatives full --steps 150 --eval-every 75 --photos 1000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--negatives", choices=["sampled", "mined", "full"], default="sampled")
    ap.add_argument("--mine", type=int, default=256)
    ap.add_argument("--uniform", type=int, default=2048, help="uniform negatives (sampled, mined)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5, help="photo head (Adam)")
    ap.add_argument("--radius-lr", type=float, default=0.0, help="> 0: also learn each place's radius")
    ap.add_argument("--levels", default="3", help="levels whose loss is trained (0 country .. 3 city)")
    ap.add_argument("--bank", type=int, default=10_000, help="training locations per kind")
    ap.add_argument("--photos", type=int, default=400, help="evaluation photos per kind and split")
    ap.add_argument("--splits", default="train", help="evaluation splits: train (new locations, same "
                                                       "cells), test (held-out cells)")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from hierloc.data.pseudo_photos import CALIBRATED, LocationSource, displace_some, location_unit
    from hierloc.eval import geoclip_bench as gb
    from hierloc.eval.evaluate import keys_of_paths
    from hierloc.infer.beam import Hierarchy, beam_search, flat_search
    from hierloc.model.geometry import Geometry

    space = gb.Space()
    table, post = space.table, space.posterior
    tree = Hierarchy.from_table(table)
    starts = [table.level_slice(lv).start for lv in range(4)]
    sizes = [table.level_size(lv) for lv in range(4)]
    geom = Geometry("lorentz", 1.0)
    dirs = post.place_directions()
    # two numbers per place from its support points: log count and spread (|mean unit feature|)
    sums = [torch.zeros(sizes[3], 512).index_add_(0, post.support_city, post.support)]
    cnts = [torch.zeros(sizes[3]).index_add_(0, post.support_city, torch.ones(len(post.support_city)))]
    for lv in (3, 2, 1):
        sums.insert(0, torch.zeros(sizes[lv - 1], 512).index_add_(0, post.parents[lv], sums[0]))
        cnts.insert(0, torch.zeros(sizes[lv - 1]).index_add_(0, post.parents[lv], cnts[0]))
    scal = [torch.cat([nn.functional.one_hot(torch.full((len(c),), lv), 4).float(),
                       torch.stack([torch.log1p(c) / 10, s.norm(dim=1) / c.clamp_min(1)], 1)], 1)
            for lv, (s, c) in enumerate(zip(sums, cnts))]

    # the bank: train-cell locations, clean and displaced features, truth by the benchmark's protocol
    rng = np.random.default_rng(args.seed)
    lat, lon, clean, moved_f = [], [], [], []
    for kind in ("cities", "gallery"):
        la, lo = LocationSource(kind, "train", table).draw(args.bank, rng)
        la2, lo2 = displace_some(la, lo, 1.0, CALIBRATED, rng)
        lat.append(la)
        lon.append(lo)
        clean.append(location_unit(space.encoder, la, lo).half())
        moved_f.append(location_unit(space.encoder, la2, lo2).half())
    lat, lon = np.concatenate(lat), np.concatenate(lon)
    clean, moved_f = torch.cat(clean), torch.cat(moved_f)
    rows = space.rg.lookup(lat, lon)
    targets = torch.from_numpy(np.stack([table.ancestor_at(rows, lv) - starts[lv] for lv in range(4)], 1)).long()
    children = {}
    for lv in (1, 2, 3):
        par = torch.as_tensor(table.parent[table.level_slice(lv)] - starts[lv - 1])
        cnt = torch.bincount(par, minlength=sizes[lv - 1])
        children[lv] = (torch.argsort(par, stable=True), torch.cat([torch.zeros(1, dtype=torch.long), cnt.cumsum(0)]))

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 512))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
            self.log_rp = nn.Parameter(torch.tensor(math.log(3.5)))
            self.base = nn.Parameter(torch.tensor([math.log(r) for r in (1.0, 2.0, 3.0, 4.0)]))
            self.rhead = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 1))
            nn.init.zeros_(self.rhead[2].weight)
            nn.init.zeros_(self.rhead[2].bias)
            self.log_tau = nn.Parameter(torch.full((4,), math.log(0.5)))

        def photo(self, u):
            return geom.to_point(self.log_rp.exp() * (u + self.mlp(u)))

        def places(self, lv, idx=None):
            d = dirs[lv] if idx is None else dirs[lv][idx]
            x = scal[lv] if idx is None else scal[lv][idx]
            return geom.to_point((self.base[lv] + self.rhead(x)[:, 0]).exp()[:, None] * d)

    model = Probe()
    groups = [{"params": list(model.mlp.parameters()) + [model.log_rp, model.log_tau], "lr": args.lr}]
    if args.radius_lr > 0:
        groups.append({"params": [model.base, *model.rhead.parameters()], "lr": args.radius_lr})
    opt = torch.optim.Adam(groups)
    train_levels = [int(x) for x in args.levels.split(",")]

    def negatives(tgt, u, lv, gen):
        """(rows of the level, log weight per row, targets as positions in rows)."""
        order, off = children[lv]
        sib = torch.cat([order[off[p]:off[p + 1]] for p in torch.unique(tgt[:, lv - 1]).tolist()])
        parts = [tgt[:, lv], sib]
        if args.negatives == "mined":
            with torch.no_grad():
                parts.append((u @ dirs[lv].T).topk(args.mine, dim=1).indices.reshape(-1))
        fixed = torch.unique(torch.cat(parts))
        draw = torch.randint(sizes[lv], (args.uniform,), generator=gen)
        draw = torch.unique(draw[~torch.isin(draw, fixed)])
        rows_ = torch.cat([fixed, draw])
        log_w = torch.zeros(len(rows_))
        log_w[len(fixed):] = math.log((sizes[lv] - len(fixed)) / max(1, len(draw)))
        where = torch.full((sizes[lv],), -1, dtype=torch.long)
        where[rows_] = torch.arange(len(rows_))
        return rows_, log_w, where[tgt[:, lv]]

    def decoder(search):
        def decode(space, u):
            with torch.inference_mode():
                pts = [model.places(lv) for lv in range(4)]
                find = beam_search if search == "beam" else flat_search
                paths = torch.cat([find(geom, model.photo(u[i:i + 1024].float()), pts, tree, 10).best
                                   for i in range(0, len(u), 1024)]).numpy()
            r = paths[:, 3] + starts[3]
            return gb.Decoded(keys_of_paths(table, paths), table.lat_deg[r], table.lon_deg[r])
        return decode

    def evaluate(step):
        out = {"step": step}
        for where in ("cities", "gallery"):
            for split in args.splits.split(","):
                res = gb.run(n_photos=args.photos, where=where, levels=(1.0,), space=space, split=split, seed=7,
                             decoders={"beam": decoder("beam"), "flat": decoder("flat")})
                for name, m in res["levels"][0]["results"].items():
                    out[f"{where}/{split}/{name}"] = [round(100 * m["accuracy"][lv], 1) for lv in
                                                      ("country", "region", "sub-region", "city")]
        print(json.dumps(out), flush=True)

    evaluate(0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    t0, train_s = time.perf_counter(), 0.0
    for step in range(1, args.steps + 1):
        ts = time.perf_counter()
        idx = torch.randint(len(lat), (args.batch,), generator=gen)
        level = torch.rand(args.batch, generator=gen) * 1.5
        moved = torch.rand(args.batch, generator=gen) < (CALIBRATED.share_displaced * level).clamp(max=1)
        w = torch.where(moved[:, None], moved_f[idx], clean[idx]).float()
        noise = torch.randn(args.batch, 512, generator=gen) / 512 ** 0.5
        u = nn.functional.normalize(w + (CALIBRATED.isotropic * level)[:, None] * noise, dim=-1)
        tgt = targets[idx]
        z = model.photo(u)
        loss = torch.zeros(())
        for lv in train_levels:
            if lv <= 1 or args.negatives == "full":
                logits = -geom.sq_dist_matrix(z, model.places(lv)) / model.log_tau[lv].exp()
                loss = loss + nn.functional.cross_entropy(logits, tgt[:, lv])
                continue
            rws, log_w, pos = negatives(tgt, u, lv, gen)
            logits = -geom.sq_dist_matrix(z, model.places(lv, rws)) / model.log_tau[lv].exp() + log_w[None]
            loss = loss + nn.functional.cross_entropy(logits, pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_s += time.perf_counter() - ts
        if step % 50 == 0:
            print(json.dumps({"step": step, "loss": round(loss.item(), 3), "steps_per_s": round(step / train_s, 2)}),
                  flush=True)
        if args.eval_every and step % args.eval_every == 0 and step != args.steps:
            evaluate(step)
    evaluate(args.steps)
    print(json.dumps({"steps": args.steps, "train_seconds": round(train_s, 1),
                      "steps_per_s": round(args.steps / train_s, 2), "wall_seconds": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
