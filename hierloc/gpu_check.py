"""The GPU check: one command that measures, in a few minutes, what a GPU does for HierLoc,
and prints JSON (benchmarks/gpu_check, `python -m hierloc bench gpu`).

- beam search over the paper-sized place table (244k places, d = 128, beam 10):
  queries/s at batch 1,024 and the single-query latency, beside gallery retrieval;
- the zero-shot image path (CLIP ViT-L/14 + GeoCLIP's head, random weights: the same
  compute): photos/s at batch 1, 8 and 64, in float32 and bfloat16 (autocast);
- `train --geoclip`: training steps per second (its shipped settings, a few dozen steps);
- peak GPU memory and the device's name.

``small=True`` shrinks every size so that the same code runs on a CPU in a test, and is
known to work before a GPU appears. Nothing here is needed to use HierLoc.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "host": platform.node()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, memory_gb=round(props.total_memory / 2 ** 30, 1),
                    cuda=torch.version.cuda)
    else:
        info.update(name=f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)")
    return info


def check_search(device: str, small: bool) -> dict:
    from hierloc.bench import PAPER_SIZES, bench_search

    sizes = (20, 100, 400, 2000) if small else PAPER_SIZES
    res = bench_search(sizes=sizes, dim=16 if small else 128, beam=10, batch=64 if small else 1024,
                       single_runs=5 if small else 200, repeats=2 if small else 5, device=device, flat=False)
    keep = ("places", "dim", "beam", "batch", "batched_qps", "single_query_ms", "retrieval_batched_qps",
            "retrieval_single_query_ms", "beam_vs_retrieval")
    return {k: res[k] for k in keep if k in res}


def _image_path(small: bool, device: str):
    from hierloc.infer import zeroshot as zs

    if not small:
        return zs.load_image_path(device, random_weights=True)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=32, projection_dim=768)
    return zs.GeoCLIPImagePath(CLIPVisionModelWithProjection(cfg), CLIPImageProcessor()).load_geoclip_mlp() \
        .eval().to(device)


def check_image_path(device: str, small: bool, batches=(1, 8, 64)) -> dict:
    """Photos per second of the zero-shot image path (pixels in, 512-d features out)."""
    model = _image_path(small, device)
    out = {}
    reps = 2 if small else 5
    for dtype in ("float32", "bfloat16"):
        for b in batches:
            x = torch.randn(b, 3, 224, 224, device=device)
            with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                                        enabled=dtype == "bfloat16"):
                model(x)  # warm-up
                _sync(device)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    model(x)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
            out[f"{dtype}_batch{b}_photos_per_s"] = round(b / statistics.median(times), 1)
    return out


def check_training(device: str, small: bool, steps: int | None = None) -> dict:
    """Steps per second of `train --geoclip` with its shipped settings (sizes shrunk when
    small), timed between two log lines, so that the data's preparation is left out."""
    from hierloc.train.config import GEOCLIP_DEFAULTS, TrainConfig
    from hierloc.train.loop import train

    steps = steps or (4 if small else 60)
    every = steps // 2
    with tempfile.TemporaryDirectory(prefix="hierloc-gpu-check-") as tmp:
        over = {**GEOCLIP_DEFAULTS, "out": str(Path(tmp) / "run"), "max_steps": steps, "log_every": every,
                "ckpt_every": 10 ** 9, "minutes": 0.0, "val_photos": 32, "device": device}
        if small:
            over.update(batch_size=32, embed_dim=16, hidden_dim=32, place_feature_photos=2000)
        cfg = TrainConfig.from_dict(over)
        t0 = time.perf_counter()
        train(cfg)
        total = time.perf_counter() - t0
        rec = [json.loads(x) for x in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    a, b = rec[0], rec[-1]
    rate = (b["step"] - a["step"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9)
    return {"steps": steps, "batch_size": cfg.batch_size, "steps_per_s": round(rate, 2),
            "photos_per_s": round(rate * cfg.batch_size, 1), "seconds_with_setup": round(total, 1)}


def run(device: str | None = None, small: bool = False) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out = {"gpu_check": 1, "small": small, **device_info(device)}
    for name, fn in (("beam_search", check_search), ("image_path", check_image_path), ("train_geoclip", check_training)):
        t = time.perf_counter()
        try:
            out[name] = fn(device, small)
        except Exception as exc:  # one part failing must not hide the others' figures
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.perf_counter() - t, 1)
    if device.startswith("cuda"):
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="HierLoc's GPU check: prints JSON")
    ap.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    ap.add_argument("--small", action="store_true", help="tiny sizes (a CPU test of the check itself)")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.device, args.small), indent=2))
    return 0
