"""The zero-shot image path side by side: eager PyTorch, the fast path (ONNX Runtime) and
GeoCLIP's own GeoCLIP.predict, on the example photos and the same random CLIP ViT-L/14
weights (the same compute as the real ones; no weights can be downloaded here).

Each method runs in a process of its own, so that its peak memory is its own: load time,
first call, then ms per photo at batch 1 and batch 8 (GeoCLIP.predict takes one photo),
medians over --runs passes over the photos. The photos' decoding is left out; the
processor's resize and normalisation are in.

    python benchmarks/bench_encoder.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("eager", "fast", "geoclip_predict")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(method: str, runs: int) -> dict:
    import torch

    from hierloc.images import load_image
    from hierloc.infer import fast_encoder as F
    from hierloc.infer import zeroshot as zs

    photos = sorted((ROOT / "assets" / "examples").glob("*.jpg"))
    images = [load_image(p) for p in photos]
    t0 = time.perf_counter()
    eager = zs.load_image_path(random_weights=True)
    if method == "fast":
        path = F.build_fast(eager, mode="fp32")  # built once, cached: here only loaded
        del eager
    elif method == "geoclip_predict":
        from hierloc.bench import geoclip_for

        model = geoclip_for(eager)
        del eager
    else:
        path = eager
    load_s = time.perf_counter() - t0
    out = {"method": method, "load_s": round(load_s, 1)}
    with torch.inference_mode():
        if method == "geoclip_predict":
            t = time.perf_counter()
            model.predict(str(photos[0]), 5)
            out["first_call_ms"] = round((time.perf_counter() - t) * 1000, 1)
            times = []
            for p in photos[:2]:  # each call encodes its 100k-point gallery: two photos are enough
                t = time.perf_counter()
                model.predict(str(p), 5)
                times.append((time.perf_counter() - t) * 1000)
            out["batch1_ms"] = round(statistics.median(times), 1)
            out["batch1_photos"] = 2
        else:
            t = time.perf_counter()
            path(path.preprocess(images[:1]))
            out["first_call_ms"] = round((time.perf_counter() - t) * 1000, 1)
            for b in (1, 8):
                times = []
                for _ in range(runs):
                    for i in range(0, len(images), b):
                        group = (images * 2)[i:i + b]
                        t = time.perf_counter()
                        path(path.preprocess(group))
                        times.append((time.perf_counter() - t) * 1000 / len(group))
                out[f"batch{b}_ms"] = round(statistics.median(times), 1)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # one method, in this process
    args = ap.parse_args(argv)
    if args.method:
        print(json.dumps(measure(args.method, args.runs)))
        return 0
    # build the fast path first (cached), so that its row measures loading, not building
    subprocess.run([sys.executable, "-c", "from hierloc.infer import zeroshot as zs, fast_encoder as F; "
                    "F.build_fast(zs.load_image_path(random_weights=True), mode='fp32')"], check=True)
    rows = []
    for m in METHODS:
        p = subprocess.run([sys.executable, __file__, "--method", m, "--runs", str(args.runs)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    eager = rows[0]
    for r in rows[1:]:
        r["speedup_batch1"] = round(eager["batch1_ms"] / r["batch1_ms"], 2)
        if "batch8_ms" in r:
            r["speedup_batch8"] = round(eager["batch8_ms"] / r["batch8_ms"], 2)
    import torch

    res = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "photos": 6, "runs": args.runs, "rows": rows}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['cpu']}, {res['threads']} threads")
        for r in rows:
            print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
