import json
import subprocess
import sys

import pandas as pd
import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "hierloc", *args], capture_output=True, text=True)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    assert "places" in out.stdout


def test_places_stats_json():
    out = run("places", "stats", "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert {"country", "region", "sub-region", "city"} <= stats.keys()
    assert stats["country"] == 246


def test_places_lookup_json():
    out = run("places", "lookup", "48.8566", "2.3522", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["iso_a2"] == "FR"
    assert res["path"]["city"] == {"key": "Paris_Paris_Ile-de-France_FR", "name": "Paris"}
    assert list(res["path"]) == ["country", "region", "sub-region", "city"]


def test_places_lookup_bad_point_is_a_clear_error():
    out = run("places", "lookup", "95", "0")
    assert out.returncode != 0
    assert "not a valid latitude/longitude" in out.stderr
    assert "Traceback" not in out.stderr


def test_places_lookup_csv(tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2, 3], "latitude": [35.68, None, -33.86],
                  "longitude": [139.69, None, 151.21]}).to_csv(src, index=False)
    dst = tmp_path / "out.csv"
    out = run("places", "lookup", "--csv", str(src), "--out", str(dst))
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(dst, keep_default_na=False)
    for level in ("country", "region", "sub-region", "city"):
        assert f"{level}_key" in df and f"{level}_name" in df
    assert df["iso_a2"].tolist() == ["JP", "", "AU"]
    assert df["city_name"][2] == "Sydney"


def test_bench_search_json_keys():
    out = run("bench", "search", "--json", "--levels", "5,20,60,300", "--batch", "64", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert {"places", "dim", "beam", "batched_qps", "single_query_ms", "device"} <= res.keys()
    assert res["places"] == 385 and res["dim"] == 128 and res["batched_qps"] > 0


@pytest.mark.slow
def test_bench_geoclip_on_my_own_locations(tmp_path):
    where = tmp_path / "mine.csv"
    where.write_text("latitude,longitude\n48.8566,2.3522\n35.6762,139.6503\n-33.87,151.21\n40.71,-74.0\n")
    out = run("bench", "geoclip", "--locations", str(where), "--noise", "0", "--json", "--out", str(tmp_path / "o"),
              "--checkpoint", "HierLoc=checkpoints/hierloc-geoclip")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["photos"] == 4 and "not accuracy on real photos" in res["benchmark"]
    block = res["levels"][0]
    shipped = block["results"]["zero-shot, tree posterior (shipped)"]
    assert shipped["accuracy"]["country"] == 1.0  # Paris, Tokyo, Sydney, New York without noise
    assert {"HierLoc, beam", "HierLoc, flat"} <= set(block["results"])
    # the checkpoint set beside each baseline on the same four photos
    gap = block["paired"]["HierLoc, beam"]["GeoCLIP gallery retrieval"]["country"]
    assert gap["photos"] == 4 and gap["only_a"] + gap["only_b"] <= 4
    md = (tmp_path / "o" / "geoclip_bench.md").read_text()
    assert md.startswith("GeoCLIP-space proxy benchmark") and "- HierLoc, beam against flat nearest city: " in md
    bad = run("bench", "geoclip", "--noise", "x")
    assert bad.returncode == 2 and "--noise" in bad.stderr
    missing = run("bench", "geoclip", "--locations", str(where), "--checkpoint", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "nowhere" in missing.stderr


@pytest.mark.slow
def test_bench_app_reports_every_step():
    out = run("bench", "app", "--runs", "1", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for step in ("decode", "encode", "search", "answer", "figures", "total"):
        assert res[f"{step}_ms"] >= 0
    # medians over photos: each step's median is at most the total's (every total holds it)
    assert res["total_ms"] >= max(res["encode_ms"], res["figures_ms"]) and res["profile"] == "preview"
    assert 1_000 < res["disk_payload_bytes"] < 100_000


def test_bench_app_trained_random_says_what_it_needs(monkeypatch, capsys):
    from hierloc.cli import main
    from hierloc.infer import predictor

    monkeypatch.setattr(predictor, "geoclip_checkpoint", lambda folder=None: None)
    assert main(["bench", "app", "--model", "trained-random"]) != 0
    assert "trained-random needs the GeoCLIP-space checkpoint" in capsys.readouterr().err


def test_calibrate_refuses_a_checkpoint_not_trained_in_geoclips_space(tmp_path):
    from hierloc.model.checkpoint import save_checkpoint
    from tests.model.helpers import tiny_model, tiny_places

    table = tiny_places()
    save_checkpoint(tiny_model(table), table, tmp_path / "tiny")
    out = run("calibrate", str(tmp_path / "tiny"))
    assert out.returncode != 0 and "not trained in GeoCLIP's space" in out.stderr
    assert "Traceback" not in out.stderr
    assert "calibration" not in json.loads((tmp_path / "tiny" / "config.json").read_text())["model"]["extra"]
    out = run("calibrate", str(tmp_path / "nowhere"))
    assert out.returncode != 0 and "does not exist" in out.stderr
