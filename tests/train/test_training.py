import json
import os
import subprocess
import sys

import pytest

from hierloc.train.config import TrainConfig

TINY = ["synth.n_photos=1500", "synth.feat_dim=64", "synth.noise=2.0", "embed_dim=16", "hidden_dim=32",
        "batch_size=128", "val_photos=100", "place_features=[\"image\"]"]


def test_config_round_trip_and_overrides(tmp_path):
    cfg = TrainConfig.load(None, ["lr=0.01", "attention=false", "synth.n_photos=100", "countries=[\"FR\"]"])
    assert cfg.lr == 0.01 and cfg.attention is False and cfg.synth == {"n_photos": 100} and cfg.countries == ("FR",)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "c.toml").write_text('lr = 0.5\ngeometry = "euclidean"\n[synth]\nn_photos = 50\n')
    t = TrainConfig.load(tmp_path / "c.toml")
    assert t.geometry == "euclidean" and t.synth["n_photos"] == 50
    with pytest.raises(ValueError, match="training config has fields"):
        TrainConfig.load(None, ["learning_rate=1"])
    with pytest.raises(ValueError, match="needs osv5m_root"):
        TrainConfig(data="osv5m")


def test_train_checkpoint_load_eval_on_tiny_geosynth(tmp_path):
    from hierloc.data.synthetic import GeoSynthConfig, make_geosynth
    from hierloc.eval.evaluate import baseline_metrics, evaluate_photos
    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.train.loop import train

    cfg = TrainConfig.load(None, TINY + [f"out={tmp_path / 'run'}", "max_steps=30", "log_every=10", "ckpt_every=10"])
    folder = train(cfg)
    model, table, meta = load_checkpoint(folder)
    assert meta["train"]["step"] == 30
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30]
    assert log[-1]["loss"] < log[0]["loss"]
    assert {"tau", "lambda", "sigma_km", "val_acc", "loss_per_level"} <= set(log[-1])
    train_set, test_set = make_geosynth(GeoSynthConfig(**meta["model"]["extra"]["geosynth"]))
    res = evaluate_photos(model, table, test_set)
    chance = baseline_metrics(table, train_set, test_set)["chance"]
    assert res["accuracy"]["country"] > 2 * chance["accuracy"]["country"]
    assert set(res["accuracy_reverse_geocoded"]) == {"country", "region", "sub-region", "city"}
    # resuming a finished run is a no-op that keeps the step count
    cfg2 = TrainConfig.load(None, TINY + [f"out={tmp_path / 'run'}", "max_steps=35", "log_every=5"])
    train(cfg2)
    _, _, meta2 = load_checkpoint(folder)
    assert meta2["train"]["step"] == 35


def test_cli_train_and_eval_json(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "hierloc", "train", "--synthetic", "--out", str(tmp_path / "r")]
    for s in TINY + ["max_steps=8", "log_every=4"]:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    ev = subprocess.run([sys.executable, "-m", "hierloc", "eval", "--checkpoint", str(tmp_path / "r" / "last"),
                         "--synthetic", "--json"], capture_output=True, text=True, env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads(ev.stdout)
    assert set(res["accuracy"]) == {"country", "region", "sub-region", "city"}
    assert {"median_km", "geoscore"} <= set(res)
    assert set(res["baselines"]) == {"chance", "nearest_centroid"}
    assert "median_km" in res["baselines"]["chance"]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_with_gloo(tmp_path):
    """torchrun, 2 processes, gloo: both ranks end with identical parameters."""
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
            "-m", "hierloc", "train", "--synthetic", "--out", str(out)]
    for s in TINY + ["max_steps=6", "log_every=3", "device=\"cpu\""]:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2 and ranks[0]["step"] == ranks[1]["step"] == 6
    assert ranks[0]["param_checksum"] == pytest.approx(ranks[1]["param_checksum"], rel=1e-9)
    assert (out / "last" / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["world_size"] == 2


def test_osv5m_layout_end_to_end(tmp_path, data_dir):
    """features extract -> train on OSV-5M features -> eval on the test split, via the CLI."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    root = data_dir / "osv5m"

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "hierloc", *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    res = json.loads(run("features", "extract", "--root", str(root), "--split", "train", "--backbone", "tiny",
                         "--out", str(tmp_path / "feats")))
    assert res["photos"] == 4 and res["failed"] == 1
    run("train", "--out", str(tmp_path / "run"), "--set", "data=osv5m", "--set", f"osv5m_root={root}",
        "--set", f"features={tmp_path / 'feats'}", "--set", "backbone=tiny", "--set", "max_steps=3",
        "--set", "batch_size=4", "--set", "embed_dim=16", "--set", "hidden_dim=16", "--set", 'place_features=["image"]')
    ev = json.loads(run("eval", "--checkpoint", str(tmp_path / "run" / "last"), "--root", str(root), "--split", "test",
                        "--features", str(tmp_path / "test_feats"), "--json"))
    assert ev["n"] == 2 and set(ev["accuracy"]) == {"country", "region", "sub-region", "city"}
    assert "accuracy_reverse_geocoded" in ev and ev["split"] == "test"
