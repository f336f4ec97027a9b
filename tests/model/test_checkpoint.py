import json

import geoopt
import pytest
import torch

from hierloc.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.model.helpers import tiny_model, tiny_places


@pytest.fixture()
def saved(tmp_path):
    table = tiny_places()
    torch.manual_seed(0)
    model = tiny_model(table, place_features=(("image", 16),), learn_curvature=False).eval()
    with torch.no_grad():  # move Euclidean weights off their initial values
        for p in model.parameters():
            if not isinstance(p, geoopt.ManifoldParameter):
                p.add_(0.01 * torch.randn_like(p))
    folder = save_checkpoint(model, table, tmp_path / "ckpt")
    return model, table, folder


def test_save_then_load_gives_identical_outputs(saved):
    model, table, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "place_features.safetensors", "places.parquet"]
    loaded, table2, meta = load_checkpoint(folder)
    assert table2.content_hash() == table.content_hash()
    feats = torch.randn(4, 16)
    with torch.no_grad():
        a = model(feats, model.encode_places())
        b = loaded(feats, loaded.encode_places())
        assert torch.allclose(a, b, atol=1e-4)  # place features are stored in float16
        assert torch.equal(model.anchor_2, loaded.anchor_2)
        assert torch.equal(model.criterion.log_tau, loaded.criterion.log_tau)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["places"]["hash"] == table.content_hash()
    assert "curvature" in cfg["curvature_convention"] and cfg["model"]["embed_dim"] == 16
    assert "backbone" in cfg


def test_only_trainable_tensors_are_saved(saved):
    from safetensors.torch import load_file

    model, _, folder = saved
    names = set(load_file(str(folder / "model.safetensors")))
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("latlon_", "feat_")) for n in names)


def test_mismatched_place_table_names_both_sides(saved):
    _, _, folder = saved
    other = tiny_places(n_countries=4)
    with pytest.raises(CheckpointError, match="place table mismatch.*trained on places .*given table"):
        load_checkpoint(folder, places=other)


def test_tampered_config_is_a_clear_error(saved):
    _, _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["embed_dim"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match its config.json.*shape differs"):
        load_checkpoint(folder)
    cfg["model"]["geometry"] = "spherical"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not describe a valid model"):
        load_checkpoint(folder)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")


def test_hub_repo_id_goes_through_huggingface_hub(saved, monkeypatch):
    import huggingface_hub

    _, table, folder = saved
    calls = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model, table2, _ = load_checkpoint("someone/hierloc-osv5m")
    assert calls["repo_id"] == "someone/hierloc-osv5m"
    assert {"model*.safetensors", "model.safetensors.index.json"} <= set(calls["allow_patterns"])
    assert table2.content_hash() == table.content_hash()


def test_hub_offline_error_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    def offline(**kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="hierloc download someone/x"):
        load_checkpoint("someone/x")


def test_answering_photos_never_imports_the_trainer():
    """Checkpoints load beside the model: the predictor, the app and the benchmarks of
    decoders do not pull in hierloc.train."""
    import subprocess
    import sys

    code = ("import sys, hierloc.infer.predictor, hierloc.ui.app, hierloc.eval.geoclip_bench, hierloc.model.checkpoint;"
            "print(sorted(m for m in sys.modules if m.startswith('hierloc.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_large_tensors_are_sharded_the_hugging_face_way(saved, tmp_path):
    """Files over the limit become shards + an index (HF convention), big tensors as row
    blocks; each file stays under the limit and the model loads back identical."""
    model, table, _ = saved
    folder = save_checkpoint(model, table, tmp_path / "sharded", max_bytes=4_000)
    names = sorted(p.name for p in folder.iterdir())
    shards = [n for n in names if n.startswith("model-") and n.endswith(".safetensors")]
    assert len(shards) >= 2 and "model.safetensors.index.json" in names and "model.safetensors" not in names
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) and index["metadata"]["total_size"] > 4_000
    assert any("@rows=" in k for k in index["weight_map"])  # a tensor larger than a shard
    for n in shards:
        assert (folder / n).stat().st_size < 4_000 + 4_096  # data under the limit, plus the header
    loaded, _, _ = load_checkpoint(folder)
    for (n, p), (n2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n == n2 and torch.equal(p.detach(), q.detach())
    from hierloc.infer.predictor import find_checkpoint

    assert find_checkpoint(tmp_path) is not None
    (folder / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match="lacks the shard"):
        load_checkpoint(folder)
