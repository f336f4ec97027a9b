"""Benchmarks shared by benchmarks/*.py and `python -m hierloc bench ...`."""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np
import torch

from hierloc.infer.beam import Hierarchy, beam_search, flat_search
from hierloc.model.geometry import Geometry

PAPER_SIZES = (233, 4946, 29214, 209894)
"""Places per level of the paper's OSV-5M hierarchy (244,287 in all)."""


def synthetic_tree(sizes=PAPER_SIZES, seed=0) -> Hierarchy:
    """A random tree with the given level sizes (every parent gets at least one child)."""
    rng = np.random.default_rng(seed)
    parents = [sizes[0]]
    for lv in range(1, 4):
        n_par, n = sizes[lv - 1], sizes[lv]
        p = np.concatenate([np.arange(n_par), rng.integers(0, n_par, n - n_par)])
        parents.append(np.sort(p))
    return Hierarchy.from_parents(parents)


def hierarchical_points(tree: Hierarchy, dim: int, geom: Geometry, seed=0, device="cpu"):
    """Tangents that follow the tree: a child is its parent plus a smaller step, so deeper
    places sit farther from the origin. Returns per-level points (N_l, p)."""
    g = torch.Generator().manual_seed(seed)
    steps = (1.0, 0.6, 0.35, 0.2)
    t = [torch.randn(tree.sizes[0], dim, generator=g) * steps[0]]
    for lv in range(1, 4):
        t.append(t[-1][tree.parents[lv]] + torch.randn(tree.sizes[lv], dim, generator=g) * steps[lv] / dim ** 0.5 * 4)
    return [geom.to_point(x).to(device) for x in t], t


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


PAPER_A100 = {"beam_qps": 13345, "retrieval_qps": 294}
"""The paper's A100 figures: beam-10 search over its 244k places, and image retrieval."""


def bench_retrieval(gallery=100_000, dim=512, k=5, batch=1024, single_runs=200, repeats=5,
                    device="cpu", seed=0) -> dict:
    """GeoCLIP-style gallery retrieval: inner products with 100k x 512 unit vectors + top-5."""
    g = torch.Generator().manual_seed(seed + 2)
    gal = torch.nn.functional.normalize(torch.randn(gallery, dim, generator=g), dim=-1).to(device)
    q = torch.nn.functional.normalize(torch.randn(max(batch, single_runs), dim, generator=g), dim=-1).to(device)

    def run(x):
        out = torch.topk(x @ gal.T, k, dim=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    with torch.inference_mode():
        run(q[:batch])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(q[:batch])
            times.append(time.perf_counter() - t0)
        lat = []
        for i in range(single_runs):
            t0 = time.perf_counter()
            run(q[i:i + 1])
            lat.append((time.perf_counter() - t0) * 1000)
    return {"retrieval_gallery": gallery, "retrieval_batched_qps": round(batch / statistics.median(times), 1),
            "retrieval_single_query_ms": round(statistics.median(lat), 3)}


def bench_search(sizes=PAPER_SIZES, dim=128, beam=10, batch=1024, single_runs=200, repeats=5,
                 device="cpu", flat=True, seed=0) -> dict:
    """Queries/s (batched) and single-query latency, beam and flat."""
    tree = synthetic_tree(sizes, seed).to(device)
    geom = Geometry("lorentz", 1.0)
    pts, tangents = hierarchical_points(synthetic_tree(sizes, seed), dim, geom, seed, device)
    g = torch.Generator().manual_seed(seed + 1)
    city_t = tangents[3][torch.randint(0, sizes[3], (max(batch, single_runs),), generator=g)]
    queries = geom.to_point(city_t + 0.05 * torch.randn(city_t.shape, generator=g)).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(fn, q):
        with torch.inference_mode():
            out = fn(geom, q, pts, tree, beam) if fn is beam_search else fn(geom, q, pts, tree, k=beam)
        sync()
        return out

    res = {"places": int(sum(sizes)), "levels": list(sizes), "dim": dim, "beam": beam,
           "batch": batch, "device": device_name(device), "repeats": repeats,
           "paper_a100_beam_qps": PAPER_A100["beam_qps"], "paper_a100_retrieval_qps": PAPER_A100["retrieval_qps"]}
    for name, fn in [("beam", beam_search)] + ([("flat", flat_search)] if flat else []):
        run(fn, queries[:batch])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(fn, queries[:batch])
            times.append(time.perf_counter() - t0)
        qps = batch / statistics.median(times)
        lat = []
        for i in range(single_runs):
            t0 = time.perf_counter()
            run(fn, queries[i:i + 1])
            lat.append((time.perf_counter() - t0) * 1000)
        key = "" if name == "beam" else "flat_"
        res[f"{key}batched_qps"] = round(qps, 1)
        res[f"{key}single_query_ms"] = round(statistics.median(lat), 3)
    res.update(bench_retrieval(batch=batch, single_runs=single_runs, repeats=repeats, device=device, seed=seed))
    res["beam_vs_retrieval"] = round(res["batched_qps"] / res["retrieval_batched_qps"], 1)
    # agreement: how often beam finds flat's nearest city on this data
    with torch.inference_mode():
        b = beam_search(geom, queries[:batch], pts, tree, beam).best[:, 3]
        f = flat_search(geom, queries[:batch], pts, tree, k=1).best[:, 3]
    res["beam_equals_flat"] = round(float((b == f).float().mean()), 4)
    return res


APP_STEPS = ("decode", "encode", "search", "answer", "figures", "total")
"""answer: the prediction with its disk data (the photo placed in the atlas); figures: the
map, and the atlas view the disk draws (the learned-geometry figure is drawn only when
asked for)."""


def bench_app_path(predictor, photos: list, runs: int = 5) -> dict:
    """Milliseconds per step of the app's answer to one photo (the Locate button's path:
    decode, image encoder, search, the answer with its disk points, map and disk
    figures), median over ``runs`` passes over ``photos``."""
    from hierloc.ui import handlers as H

    import json

    session = H.Session(predictor.profile, [predictor.profile], loader=lambda p: predictor)
    H.locate(session, str(photos[0]), 10, 5, True, None)  # warm-up: outlines, caches, the atlas
    steps: dict[str, list] = {s: [] for s in APP_STEPS}
    payload = []
    for _ in range(runs):
        for photo in photos:
            _, _, view, _, _, answer, _ = H.locate(session, str(photo), 10, 5, True, None)
            payload.append(len(json.dumps(view)))
            for s in APP_STEPS:
                steps[s].append(answer["timings_ms"].get(s, 0.0))
    out = {"profile": predictor.profile, "model": predictor.engine.description, "photos": len(photos),
           "runs": runs, "device": device_name("cpu")}
    out.update({f"{s}_ms": round(statistics.median(v), 1) for s, v in steps.items()})
    out["total_without_encoder_ms"] = round(statistics.median(
        [t - e for t, e in zip(steps["total"], steps["encode"])]), 1)
    out["disk_payload_bytes"] = int(statistics.median(payload))
    image_path = getattr(predictor.engine, "image_path", None)
    if image_path is not None and hasattr(image_path, "eager"):  # zero-shot on a CPU: the app path and eager
        enc = bench_encoders(image_path, photos, runs=max(1, runs))
        out["encode_path"] = image_path.kind
        out["encode_ms"] = enc["app_ms"]
        out["encode_eager_ms"] = enc["eager_ms"]
        out["encode_speedup"] = round(enc["eager_ms"] / enc["app_ms"], 2)
        out["geoclip_predict_ms"] = geoclip_predict_ms(image_path.eager, photos[:2])
        out["geoclip_predict_photos"] = 2
    return out


def _images(photos):
    from hierloc.images import load_image

    return [load_image(p) for p in photos]


def bench_encoders(image_path, photos, runs: int = 3, batch: int = 1) -> dict:
    """Milliseconds per photo of the image encoder, decoding excluded, preprocessing
    included: the path the app uses (image_path.current) and eager PyTorch
    (image_path.eager), interleaved photo by photo so that both see the same machine;
    medians over runs x photos."""
    import torch

    images = _images(photos)
    groups = [images[i:i + batch] for i in range(0, len(images), batch)]
    app, eager = [], []
    with torch.inference_mode():
        image_path.current(image_path.preprocess(groups[0]))  # warm-up
        image_path.eager(image_path.preprocess(groups[0]))
        for _ in range(runs):
            for g in groups:
                for fn, acc in ((image_path.current, app), (image_path.eager, eager)):
                    t0 = time.perf_counter()
                    fn(image_path.preprocess(g))
                    acc.append((time.perf_counter() - t0) * 1000 / len(g))
    return {"app_ms": round(statistics.median(app), 1), "eager_ms": round(statistics.median(eager), 1),
            "batch": batch, "runs": runs}


def geoclip_for(eager):
    """GeoCLIP's own model (the geoclip package: its MLP and location encoder weights)
    with the same CLIP vision weights as ``eager``, built offline (no CLIP download)."""
    from geoclip import GeoCLIP

    g = GeoCLIP(from_pretrained=True, clip_pretrained=False).eval()
    clip = g.image_encoder.CLIP
    clip.vision_model.load_state_dict(eager.vision.vision_model.state_dict())
    clip.visual_projection.load_state_dict(eager.vision.visual_projection.state_dict())
    g.image_encoder.mlp.load_state_dict(eager.mlp.state_dict())
    return g


def geoclip_predict_ms(eager, photos, top_k: int = 5) -> float:
    """Milliseconds per photo of GeoCLIP's own GeoCLIP.predict (it encodes its 100k GPS
    gallery at every call), median over the photos."""
    g = geoclip_for(eager)
    times = []
    for p in photos:
        t0 = time.perf_counter()
        g.predict(str(p), top_k)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)
