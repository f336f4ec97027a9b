"""The checkpoint that ships in checkpoints/: its files, its table, its numbers, its answers."""

import json

import numpy as np
import pytest
import torch

from hierloc.paths import CHECKPOINTS_DIR

SHIPPED = CHECKPOINTS_DIR / "hierloc-geoclip"


@pytest.fixture(scope="module")
def shipped():
    from hierloc.model.checkpoint import load_checkpoint

    return load_checkpoint(SHIPPED)


def test_shipped_files_are_space_sized_and_complete():
    files = sorted(p.name for p in SHIPPED.iterdir())
    assert {"config.json", "places.parquet", "model.safetensors.index.json", "README.md"} <= set(files)
    assert {"geoclip_bench.md", "geoclip_bench.json"} <= set(files) or (SHIPPED / "benchmark").is_dir()
    assert max(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) < 10 * 10 ** 6  # a Space, no LFS
    index = json.loads((SHIPPED / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f for f in files if f.startswith("model-")}
    assert not [f for f in files if f.startswith("place_features")]  # folded: no per-place inputs


def test_shipped_checkpoint_matches_the_offline_places_and_says_how_it_was_made(shipped):
    from hierloc.geo.places import default_places

    model, table, meta = shipped
    assert table.content_hash() == default_places().content_hash() == meta["places"]["hash"]
    assert meta["model"]["backbone"] == "geoclip" and meta["model"]["feat_dim"] == 512
    assert meta["model"]["geometry"] == "lorentz"
    cfg = meta["train"]["recipe"]
    assert "seed" in cfg and cfg["embed_dim"] == meta["model"]["embed_dim"] == 128
    assert meta["train"]["command"].startswith("python -m hierloc train --geoclip-recipe")
    # the CPU budget is 60 minutes; building the photo bank from nothing comes on
    # top (under a minute here, README), so training itself must stay within 50
    assert meta["train"]["seconds"] <= 50 * 60
    assert meta["model"]["extra"]["search_score"] == "path"
    # the support-attention head: its support points are rebuilt at load and match the hash it was trained with
    assert meta["model"]["photo_head"] == "support" and len(meta["model"]["extra"]["support_hash"]) == 64
    assert model.support_unit.shape[0] == meta["model"]["support_points"]
    assert not model.photo_mlp[-1].weight.any()  # the image MLP's residual stayed zero (the recipe's default)
    assert not model.training


def test_shipped_geometry_numbers_hold(shipped):
    """The numbers the About text quotes are the checkpoint's (recomputed on a sample)."""
    from hierloc.eval.hierarchy_geometry import hierarchy_geometry

    model, table, meta = shipped
    stored = meta["geometry_check"]
    got = hierarchy_geometry(model.geometry, model.place_points(), table, sample=3000, seed=1)
    for key in ("farther_than_parent", "nearest_is_parent"):
        for level in ("region", "sub-region"):
            assert abs(got[key][level] - stored[key][level]) < 0.04, (key, level)
        assert abs(got[key]["city"] - stored[key]["city"]) < 0.04
    # a tree: places lie further out than their parent, and nearest to it of their parent's level
    assert stored["farther_than_parent"]["all"] >= 0.95 and stored["nearest_is_parent"]["all"] >= 0.90
    assert min(got["farther_than_parent"][lv] for lv in ("region", "sub-region", "city")) >= 0.95
    assert min(got["nearest_is_parent"][lv] for lv in ("region", "sub-region", "city")) >= 0.90
    assert stored["mean_radius"]["country"] < min(stored["mean_radius"][lv] for lv in ("region", "sub-region", "city"))


def test_shipped_checkpoint_locates_pseudo_photos(shipped):
    """Trained, not random: clean GeoCLIP features of new locations in training cells, and
    of places in held-out cells (where it is far weaker below the country: README)."""
    from hierloc.data.geoclip_space import GeoClipPhotos
    from hierloc.eval.evaluate import predict_features

    model, table, _ = shipped
    for split, floor in (("train", (0.95, 0.75, 0.45, 0.3)), ("test", (0.88, 0.3, 0.0, 0.0))):
        photos = GeoClipPhotos(table, "cities", split)
        b = photos.batch(300, np.random.default_rng(5), level=0.0)
        best, _ = predict_features(model, table, b.feats)
        acc = (torch.as_tensor(best) == b.targets).double().mean(0)
        assert all(float(a) > f for a, f in zip(acc, floor)), (split, acc)
