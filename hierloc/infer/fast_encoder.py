"""The zero-shot image path on ONNX Runtime: the same 512-d feature, faster on a CPU.

CLIP ViT-L/14's vision tower + projection + GeoCLIP's image MLP (infer.zeroshot.
GeoCLIPImagePath) exported once to ONNX and run by ONNX Runtime, whose CPU matrix
products (MLAS) run this model's at about 140 GFLOP/s on a 2-core AVX2 machine where
PyTorch's reach about 100. Built once per set of weights and cached
(HIERLOC_CACHE/onnx/<key>/, about 1.2 GB); the eager PyTorch path stays the fallback and
the reference.

The same output: the export computes exactly the eager model's arithmetic (tests: within
1e-4 on the unit feature, on random weights and the example photos), with one exact
saving: only the class token leaves the last transformer layer (the rest of its output is
never read), so that layer computes its query, attention, projection and MLP for that
token alone (3% of the model's work).

Lossy options only when asked for (HIERLOC_FAST=int8: ONNX Runtime's dynamic int8
quantization of the matrix products): their effect on accuracy cannot be measured here
(no real CLIP weights), and the log says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

FAST_ENV = "HIERLOC_FAST"
MODES = ("fp32", "int8", "off")
EXPORT_VERSION = 1
"""Bump when the export changes, so that old cached models are not used."""


class FastUnavailable(RuntimeError):
    """ONNX Runtime (or onnx, for building) is missing, or the cached model is broken."""


def fast_mode() -> str:
    """HIERLOC_FAST: fp32 (default), int8 (lossy, asked for), off (eager PyTorch only)."""
    mode = os.environ.get(FAST_ENV, "fp32").strip().lower() or "fp32"
    if mode in ("0", "no", "false", "eager"):
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"{FAST_ENV}={mode!r}: expected one of {MODES}")
    return mode


class _ClassTokenTower(nn.Module):
    """GeoCLIPImagePath's arithmetic, written out: pixels (B, 3, 224, 224) -> (B, 512), the
    last layer for the class token alone."""

    def __init__(self, image_path):
        super().__init__()
        self.vm = image_path.vision.vision_model
        self.proj = image_path.vision.visual_projection
        self.mlp = image_path.mlp

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        vm = self.vm
        h = vm.pre_layrnorm(vm.embeddings(pixel_values=pixels))  # (B, T, W)
        layers = vm.encoder.layers
        for layer in layers[:-1]:
            h = layer(h, None)
        last = layers[-1]
        att = last.self_attn
        x = last.layer_norm1(h)
        B, T, W = x.shape
        heads, dh = att.num_heads, att.head_dim
        q = att.q_proj(x[:, :1]).view(B, 1, heads, dh).transpose(1, 2)  # (B, H, 1, dh)
        k = att.k_proj(x).view(B, T, heads, dh).transpose(1, 2)  # (B, H, T, dh)
        v = att.v_proj(x).view(B, T, heads, dh).transpose(1, 2)  # (B, H, T, dh)
        w = torch.softmax((q @ k.transpose(-1, -2)) * att.scale, dim=-1)  # (B, H, 1, T)
        o = att.out_proj((w @ v).transpose(1, 2).reshape(B, 1, W))  # (B, 1, W)
        c = h[:, :1] + o
        c = c + last.mlp(last.layer_norm2(c))
        pooled = vm.post_layernorm(c[:, 0])  # (B, W)
        return self.mlp(self.proj(pooled))  # (B, 512)


def weights_key(image_path) -> str:
    """A key for a set of weights: the architecture and a sample of every tensor (its
    shape, its first and last 64 values), hashed. Cheap, and different weights differ."""
    h = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    h.update(json.dumps(image_path.vision.config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in list(image_path.state_dict().items()):
        flat = t.detach().reshape(-1).float()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(flat[:64].numpy().tobytes())
        h.update(flat[-64:].numpy().tobytes())
    return h.hexdigest()[:20]


def model_dir(image_path, cache: Path | None = None) -> Path:
    from hierloc.paths import cache_dir

    return (cache or cache_dir() / "onnx") / f"geoclip-image-{weights_key(image_path)}"


def export(image_path, folder: Path) -> Path:
    """Write the ONNX model of an image path into ``folder`` (atomic: a temporary folder
    renamed into place). Returns the .onnx file."""
    try:
        import onnx  # noqa: F401 (the exporter needs it)
    except ImportError:
        raise FastUnavailable("building the fast image path needs the onnx package (pip install onnx)") from None
    import shutil
    import warnings

    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tower = _ClassTokenTower(image_path).eval()
    size = int(image_path.vision.config.image_size)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tower, (torch.zeros(1, 3, size, size),), str(tmp / "model.onnx"), input_names=["pixels"],
                          output_names=["feature"], dynamic_axes={"pixels": {0: "batch"}, "feature": {0: "batch"}},
                          opset_version=17, dynamo=False, external_data=True)
    (tmp / "info.json").write_text(json.dumps({"export_version": EXPORT_VERSION, "seconds": round(time.perf_counter() - t0, 1),
                                               "torch": torch.__version__}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder / "model.onnx"


class FastImagePath:
    """The ONNX Runtime image path: the same interface as GeoCLIPImagePath
    (preprocess(images) -> pixels; __call__(pixels) -> (B, 512) float32)."""

    def __init__(self, onnx_file: Path, processor, mode: str = "fp32", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise FastUnavailable("the fast image path needs onnxruntime (pip install onnxruntime)") from None
        self.processor = processor
        self.mode = mode
        path = Path(onnx_file)
        if mode == "int8":
            path = _quantized(path)
            log.warning("zero-shot runs CLIP with int8 matrix products (%s=int8): faster, but its effect on "
                        "accuracy cannot be measured here; unset it for the exact path", FAST_ENV)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        # no busy-waiting between calls: on a 2-core machine a spinning pool would steal the
        # cores from everything else an answer does (search, the map)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: say so, the caller falls back
            raise FastUnavailable(f"the cached fast model {path} cannot be loaded ({type(exc).__name__}: {exc})") from None

    def preprocess(self, images) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"pixels": x})[0])

    def to(self, device):  # the CPU path only; the device is for the eager one
        return self


def _quantized(path: Path) -> Path:
    out = path.with_name("model-int8.onnx")
    if not out.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_name(f"model-int8.tmp{os.getpid()}.onnx")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, use_external_data_format=True)
        tmp.replace(out)
    return out


def load_fast(image_path, cache: Path | None = None, mode: str | None = None) -> FastImagePath | None:
    """The cached fast path of these weights, or None when it has not been built."""
    mode = mode or fast_mode()
    if mode == "off":
        return None
    f = model_dir(image_path, cache) / "model.onnx"
    if not f.exists():
        return None
    return FastImagePath(f, image_path.processor, mode)


def build_fast(image_path, cache: Path | None = None, mode: str | None = None) -> FastImagePath:
    """Build (if needed) and load the fast path of these weights."""
    mode = mode or fast_mode()
    folder = model_dir(image_path, cache)
    if not (folder / "model.onnx").exists():
        log.info("building the fast zero-shot image path (ONNX, about 1.2 GB in %s; a minute or two, once)", folder)
        t0 = time.perf_counter()
        export(image_path, folder)
        log.info("fast image path built in %.0f s", time.perf_counter() - t0)
    return FastImagePath(folder / "model.onnx", image_path.processor, "fp32" if mode == "off" else mode)


class SwitchingImagePath:
    """The eager path until the fast one is ready (built in the background), then the fast
    one. ``current`` is what encodes now; ``ready`` is set once the fast path is in use."""

    def __init__(self, eager, cache: Path | None = None, mode: str | None = None, background: bool = True):
        self.eager = eager
        self.processor = eager.processor
        self.current = eager
        self.ready = threading.Event()
        self.error: str | None = None
        self.mode = mode or fast_mode()
        if self.mode == "off":
            return
        try:
            fast = load_fast(eager, cache, self.mode)
        except FastUnavailable as exc:
            log.warning("%s: using eager PyTorch", exc)
            fast = None
        if fast is not None:
            self._use(fast)
        elif background:
            threading.Thread(target=self._build, args=(cache,), daemon=True, name="hierloc-fast-build").start()

    def _build(self, cache):
        try:
            self._use(build_fast(self.eager, cache, self.mode))
        except Exception as exc:  # never break answering: stay on the eager path
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("the fast image path could not be built (%s): answering with eager PyTorch", self.error)

    def _use(self, fast: FastImagePath) -> None:
        self.current = fast
        self.ready.set()
        log.info("zero-shot image path: ONNX Runtime (%s)", fast.mode)

    @property
    def kind(self) -> str:
        return f"onnxruntime-{self.current.mode}" if self.ready.is_set() else "eager-pytorch"

    def preprocess(self, images) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.current(pixels)

    def to(self, device):
        return self
