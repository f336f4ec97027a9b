"""The fast (ONNX Runtime) zero-shot image path: the same feature as eager PyTorch, built
once and cached, picked up when it is there, never in the way when it is not."""

from pathlib import Path

import pytest
import torch

from hierloc.infer import fast_encoder as F
from hierloc.infer import zeroshot as zs

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def _tiny_image_path(seed=0):
    """GeoCLIP's image path on a small random CLIP vision tower (same code, little compute)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           patch_size=32, projection_dim=768)
    torch.manual_seed(seed)
    return zs.GeoCLIPImagePath(CLIPVisionModelWithProjection(cfg), CLIPImageProcessor()).load_geoclip_mlp().eval()


def _photos(n=3):
    from hierloc.images import load_image

    return [load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))[:n]]


def test_the_export_computes_the_same_feature(tmp_path):
    eager = _tiny_image_path()
    px = eager.preprocess(_photos(3))  # a batch of 3: the batch size is free
    with torch.no_grad():
        assert torch.allclose(F._ClassTokenTower(eager)(px), eager(px), atol=1e-6)  # the class-token shortcut
    fast = F.build_fast(eager, tmp_path, mode="fp32")
    ref = torch.nn.functional.normalize(eager(px), dim=-1)
    got = torch.nn.functional.normalize(fast(px), dim=-1)
    assert got.shape == (3, 512) and (got - ref).abs().max() < 1e-5
    # cached by its weights: found again without building; other weights are another model
    assert F.load_fast(eager, tmp_path) is not None
    assert F.model_dir(_tiny_image_path(seed=1), tmp_path) != F.model_dir(eager, tmp_path)
    assert F.load_fast(_tiny_image_path(seed=1), tmp_path) is None


def test_int8_only_when_asked_and_says_so(tmp_path, caplog):
    eager = _tiny_image_path()
    px = eager.preprocess(_photos(2))
    with caplog.at_level("WARNING"):
        q = F.build_fast(eager, tmp_path, mode="int8")
    assert "cannot be measured here" in caplog.text
    cos = torch.nn.functional.cosine_similarity(q(px), eager(px))
    assert (cos > 0.98).all()
    assert F.fast_mode() == "fp32"  # the default is the exact path


def test_switching_path_uses_the_cache_and_falls_back(tmp_path, monkeypatch, caplog):
    eager = _tiny_image_path()
    px = eager.preprocess(_photos(1))
    cold = F.SwitchingImagePath(eager, tmp_path, background=False)
    assert cold.kind == "eager-pytorch" and torch.equal(cold(px), eager(px))
    cold._build(tmp_path)  # what the background thread does
    assert cold.ready.is_set() and cold.kind == "onnxruntime-fp32"
    warm = F.SwitchingImagePath(eager, tmp_path)  # a second start: the cached model at once
    assert warm.ready.is_set() and (warm(px) - eager(px)).abs().max() < 1e-4
    # a broken cached file: a plain warning, and answers keep coming from eager PyTorch
    (F.model_dir(eager, tmp_path) / "model.onnx").write_bytes(b"not a model")
    with caplog.at_level("WARNING"):
        broken = F.SwitchingImagePath(eager, tmp_path, background=False)
    assert broken.kind == "eager-pytorch" and "cannot be loaded" in caplog.text
    monkeypatch.setenv(F.FAST_ENV, "off")
    off = F.SwitchingImagePath(eager, tmp_path)
    assert off.kind == "eager-pytorch" and off.mode == "off"
    monkeypatch.setenv(F.FAST_ENV, "sometimes")
    with pytest.raises(ValueError, match="HIERLOC_FAST"):
        F.fast_mode()


@pytest.mark.slow
def test_full_size_fast_path_gives_the_same_answers_on_the_examples():
    """CLIP ViT-L/14 with (seeded) random weights: the fast path's unit features within
    1e-4 of eager PyTorch on the example photos, and the same zero-shot answers."""
    from hierloc.infer.predictor import Predictor, zeroshot_engine

    predictor = Predictor(zeroshot_engine(random_weights=True, background=False))
    switch = predictor.engine.image_path
    photos = _photos(6)
    eager_answers = [p.path for p in predictor.predict_many(photos, with_disk=False)]
    switch._use(F.build_fast(switch.eager))
    assert switch.kind == "onnxruntime-fp32"
    for image in photos:
        px = switch.preprocess([image])
        ref = torch.nn.functional.normalize(switch.eager(px), dim=-1)
        got = torch.nn.functional.normalize(switch(px), dim=-1)
        assert (got - ref).abs().max() < 1e-4
    fast_answers = [p.path for p in predictor.predict_many(photos, with_disk=False)]
    assert [[s["key"] for s in a] for a in fast_answers] == [[s["key"] for s in a] for a in eager_answers]
