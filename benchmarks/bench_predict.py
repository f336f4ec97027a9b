"""Prediction speed per profile, and the zero-shot place-encoder cache build.

    python benchmarks/bench_predict.py [--runs 3] [--skip-zeroshot]

- cache: GeoCLIP location features of every place of the offline hierarchy (165k),
  built into a temporary file (time and size);
- preview: EfficientNet-Lite0 + untrained head, photos/s on the example photos
  (decode, backbone, beam search), single photo and batches of 8;
- zero-shot: CLIP ViT-L/14 with RANDOM weights (same compute as the real one) + GeoCLIP.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def photos_per_s(predictor, images, runs: int, batch: int) -> float:
    predictor.predict_images(images[:1])  # warm-up
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            predictor.predict_images(images[i:i + batch])
        rates.append(len(images) / (time.perf_counter() - t0))
    return round(statistics.median(rates), 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-zeroshot", action="store_true")
    args = ap.parse_args(argv)

    from hierloc.data.place_features import location_features
    from hierloc.geo.places import default_places
    from hierloc.images import load_image
    from hierloc.infer.predictor import Predictor, preview_engine, zeroshot_engine

    table = default_places()
    res = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "loc.safetensors"
        t0 = time.perf_counter()
        location_features(table, cache=cache)
        res["place_cache"] = {"places": len(table), "seconds": round(time.perf_counter() - t0, 1),
                              "mb": round(cache.stat().st_size / 2**20, 1)}
    images = [load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))] * 2  # 12 photos
    t0 = time.perf_counter()
    preview = Predictor(preview_engine(table))
    res["preview"] = {"load_s": round(time.perf_counter() - t0, 1),
                      "photos_per_s_single": photos_per_s(preview, images, args.runs, 1),
                      "photos_per_s_batch8": photos_per_s(preview, images, args.runs, 8)}
    if not args.skip_zeroshot:
        t0 = time.perf_counter()
        zs = Predictor(zeroshot_engine(table, random_weights=True))
        res["zero_shot_random_vit_l14"] = {"load_s": round(time.perf_counter() - t0, 1),
                                           "photos_per_s_single": photos_per_s(zs, images, args.runs, 1),
                                           "photos_per_s_batch8": photos_per_s(zs, images, args.runs, 8)}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
