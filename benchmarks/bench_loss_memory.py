"""Peak memory of one GWH-InfoNCE forward + backward: batch B photos against N places.

    python benchmarks/bench_loss_memory.py [--batch 256] [--places 210000] [--device cpu|cuda]

CPU: peak resident memory (VmHWM) above the resident memory before the loss, with the
inputs already allocated. CUDA: torch.cuda.max_memory_allocated above the inputs.
"""

import argparse
import json
import time

import torch

from hierloc.losses import GeoWeightedLoss
from hierloc.model.geometry import Geometry


def rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--places", type=int, default=210_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    geom = Geometry("lorentz", 1.0)
    v = (torch.randn(args.batch, args.dim, generator=g) * 0.5).to(dev).requires_grad_(True)
    h_t = (torch.randn(args.places, args.dim, generator=g) * 0.5).to(dev).requires_grad_(True)
    target = torch.randint(0, args.places, (args.batch,), generator=g).to(dev)
    pll = (torch.rand(args.batch, 2, generator=g) * torch.tensor([140.0, 360.0]) - torch.tensor([70.0, 180.0])).to(dev)
    hll = (torch.rand(args.places, 2, generator=g) * torch.tensor([140.0, 360.0]) - torch.tensor([70.0, 180.0])).to(dev)
    loss_fn = GeoWeightedLoss(chunk=args.chunk).to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_mb("VmRSS")
    t0 = time.perf_counter()
    loss = loss_fn.level_loss(geom, geom.to_point(v), geom.to_point(h_t), target, pll, hll).mean()
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = rss_mb("VmHWM") - base
    print(json.dumps({"batch": args.batch, "places": args.places, "dim": args.dim, "chunk": args.chunk,
                      "device": str(dev), "peak_mb_above_inputs": round(peak, 1),
                      "seconds": round(time.perf_counter() - t0, 2), "loss": round(loss.item(), 4),
                      "grads_finite": bool(torch.isfinite(v.grad).all() and torch.isfinite(h_t.grad).all())}))


if __name__ == "__main__":
    main()
