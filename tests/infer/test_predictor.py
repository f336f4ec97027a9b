import json
import shutil
import subprocess
import sys

import pytest

from hierloc.infer import predictor as P


@pytest.fixture(scope="module")
def preview():
    return P.Predictor(P.preview_engine())


def test_preview_answers_and_says_it_is_untrained(preview, data_dir):
    pred = preview.predict(data_dir / "exif" / "DSCN0010.jpg", top_k=3)
    assert pred.ok and pred.untrained and pred.profile == "preview"
    assert pred.banner == "untrained: not a real prediction"
    assert pred.to_dict()["banner"] == "untrained: not a real prediction"
    assert [p["level"] for p in pred.path] == ["country", "region", "sub-region", "city"]
    assert len(pred.candidates) == 3 and pred.candidates[0]["path"][3]["key"] == pred.path[3]["key"]
    # EXIF GPS of the photo (Arezzo) and the error of the guess
    assert pred.exif_latitude == pytest.approx(43.467, abs=1e-3)
    assert pred.error_km > 0
    # the path is a real path of the hierarchy
    t = preview.table
    rows = [t.index(p["key"]) for p in pred.path]
    assert all(t.parent[rows[i]] == rows[i - 1] for i in range(1, 4))
    # the disk holds the path's places, drawn where the shipped checkpoint puts them; the
    # preview's untrained photo feature does not live there, so the photo is not drawn
    learned = preview.learned_disk_of(pred)
    assert learned["photo"] is None and learned["trained"]
    assert {p["role"] for p in learned["places"]} >= {"path", "sibling"}
    # ... and the atlas places the photo by the answer's own distribution (its beam paths)
    atlas = pred.disk["atlas"]
    assert atlas["path"] == [p["key"] for p in pred.path] and "beam-search paths" in atlas["basis"]
    assert abs(sum(w for _, w in atlas["cities"]) - 1) < 1e-4
    assert all(0 < p["confidence"] <= 1 for p in pred.path)


def test_bad_input_is_a_clear_failure(preview, tmp_path):
    (tmp_path / "a.jpg").write_text("not a photo")
    pred = preview.predict(tmp_path / "a.jpg")
    assert not pred.ok and "not an image we can read" in pred.error and pred.untrained


def test_deterministic(preview, data_dir):
    a = preview.predict(data_dir / "exif" / "landscape_1.jpg")
    b = preview.predict(data_dir / "exif" / "landscape_1.jpg")
    assert a.path == b.path


def test_resolution_order(tmp_path, monkeypatch):
    import hierloc.hub

    monkeypatch.delenv("HIERLOC_MODEL", raising=False)
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(hierloc.hub, "cached_file", lambda *a, **k: None)
    r = P.resolve_model(None, empty)
    assert r.profile == "preview" and "no network" in r.reason
    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: True)
    assert P.resolve_model(None, empty).profile == "zero-shot"
    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(hierloc.hub, "cached_file", lambda *a, **k: "/cache/model.safetensors")
    assert P.resolve_model(None, empty).profile == "zero-shot"
    # a checkpoint in checkpoints/ wins over zero-shot
    ckpts = tmp_path / "ckpts"
    (ckpts / "mine").mkdir(parents=True)
    (ckpts / "mine" / "config.json").write_text("{}")
    (ckpts / "mine" / "model.safetensors").write_bytes(b"")
    r = P.resolve_model(None, ckpts)
    assert r.profile == "trained" and r.source.endswith("mine")
    # an explicit choice wins over everything, from --model or HIERLOC_MODEL
    assert P.resolve_model("preview", ckpts).profile == "preview"
    monkeypatch.setenv("HIERLOC_MODEL", "zero-shot")
    r = P.resolve_model(None, ckpts)
    assert r.profile == "zero-shot" and "HIERLOC_MODEL" in r.reason
    assert P.resolve_model("someone/repo", ckpts) == P.Resolution("trained", "someone/repo",
                                                                  "--model names the checkpoint someone/repo")


def test_explicit_model_that_cannot_load_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HIERLOC_MODEL", raising=False)
    with pytest.raises(P.ModelUnavailable, match="does not exist"):
        P.load_predictor(str(tmp_path / "missing"))


def test_trained_profile_from_a_checkpoint(tmp_path, monkeypatch):
    """A checkpoint trained with the tiny backbone answers through the same interface."""
    from hierloc.model.checkpoint import save_checkpoint
    from tests.model.helpers import tiny_model, tiny_places

    table = tiny_places()
    model = tiny_model(table, feat_dim=32, backbone="tiny")
    save_checkpoint(model, table, tmp_path / "ck")
    pred = P.load_predictor(str(tmp_path / "ck")).predict(
        __import__("pathlib").Path(__file__).parents[1] / "data" / "exif" / "landscape_1.jpg")
    assert pred.ok and pred.profile == "trained" and not pred.untrained
    assert pred.path[0]["key"].startswith("C")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hierloc", *args], capture_output=True, text=True,
                          env={**__import__("os").environ, "HIERLOC_MODEL": "preview"})


def test_cli_predict_folder_with_bad_files(tmp_path, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("DSCN0010.jpg", "landscape_3.jpg", "HMD_Nokia_8.3_5G_hdr.heif"):
        shutil.copy(data_dir / "exif" / name, folder / name)
    (folder / "notes.txt").write_text("hello")
    (folder / "empty.jpg").write_bytes(b"")
    good = (data_dir / "exif" / "landscape_1.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    out = _run("predict", str(folder), "--format", "jsonl", "--top-k", "3")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    by_name = {l["path"].split("/")[-1]: l for l in lines}
    assert len(lines) == 6
    for name in ("DSCN0010.jpg", "landscape_3.jpg", "HMD_Nokia_8.3_5G_hdr.heif"):
        rec = by_name[name]
        assert rec["ok"] and rec["profile"] == "preview" and rec["untrained"] is True
        assert rec["city_key"] and rec["country_name"] and rec["latitude"] is not None
    assert by_name["DSCN0010.jpg"]["exif_latitude"] == pytest.approx(43.467, abs=1e-3)
    assert by_name["DSCN0010.jpg"]["error_km"] > 0
    assert by_name["HMD_Nokia_8.3_5G_hdr.heif"]["exif_longitude"] == pytest.approx(-3.764, abs=1e-3)
    assert "not an image" in by_name["notes.txt"]["error"]
    assert "empty" in by_name["empty.jpg"]["error"]
    assert "truncated" in by_name["broken.jpg"]["error"]
    assert all(not by_name[n]["ok"] for n in ("notes.txt", "empty.jpg", "broken.jpg"))


def test_cli_predict_formats_and_exit_status(tmp_path, data_dir):
    out = _run("predict", str(data_dir / "exif" / "landscape_1.jpg"), "--format", "geojson",
               "--out", str(tmp_path / "o.geojson"))
    assert out.returncode == 0
    fc = json.loads((tmp_path / "o.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and fc["features"][0]["geometry"]["type"] == "Point"
    assert fc["features"][0]["properties"]["untrained"] is True
    (tmp_path / "x.txt").write_text("x")
    bad = _run("predict", str(tmp_path / "x.txt"), "--format", "csv")
    assert bad.returncode != 0 and "not an image" in bad.stdout


def test_cli_eval_images(data_dir):
    out = _run("eval", "--images", str(data_dir / "exif"), "--labels", str(data_dir / "exif_labels.csv"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["n_read"] == 3 and res["n_with_gps"] == 3 and res["profile"] == "preview"
    assert {"median_km", "geoscore", "acc_km", "accuracy", "accuracy_reverse_geocoded"} <= set(res)
    assert res["level_counts"]["country"] == 3


def test_an_engine_with_its_own_search_answers_through_it(data_dir):
    """The zero-shot profile's path: photo points whose direction is a GeoCLIP feature,
    decoded by the tree posterior (here over a tiny table, cities as the only support)."""
    import numpy as np
    import torch

    from hierloc.data.place_features import location_features
    from hierloc.infer import zeroshot as zs
    from hierloc.model.geometry import Geometry
    from tests.model.helpers import tiny_places

    table = tiny_places()
    loc = location_features(table, cache=data_dir / "tmp_tiny_location.safetensors")
    (data_dir / "tmp_tiny_location.safetensors").unlink()
    post = zs.TreePosterior.for_table(table, loc[3], with_gallery=False)
    target = 5  # the photo is taken exactly at city 5
    u = torch.nn.functional.normalize(loc[3][target:target + 1], dim=-1)
    engine = P.Engine("zero-shot", "test", False, table, Geometry("lorentz", 1.0),
                      zs.place_points(post.place_directions()), 1.0,
                      lambda images: zs.photo_points(u.expand(len(images), -1)),
                      search=lambda z, k: post.search(z[:, 1:], k))
    pred = P.Predictor(engine).predict(data_dir / "exif" / "DSCN0010.jpg", top_k=3)
    city_row = table.level_slice("city").start + target
    assert pred.path[3]["key"] == table.key[city_row]
    assert (pred.latitude, pred.longitude) == (table.lat_deg[city_row], table.lon_deg[city_row])
    probs = [c["probability"] for c in pred.candidates]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert np.isclose(pred.path[3]["confidence"], probs[0], atol=1e-4)
    predictor = P.Predictor(engine)
    assert predictor.learned_disk_of(pred)["places"]
    # the disk places the photo by the tree posterior's own city masses, not the paths'
    atlas = pred.disk["atlas"]
    assert atlas["basis"] == "" and atlas["cities"][0][0] == table.key[city_row]


def test_predict_many_batches_the_encoder_and_keeps_bad_files(preview, data_dir, tmp_path, monkeypatch):
    (tmp_path / "bad.jpg").write_text("not a photo")
    photos = [data_dir / "exif" / "DSCN0010.jpg", tmp_path / "bad.jpg"] + sorted(
        (data_dir.parent.parent / "assets" / "examples").glob("*.jpg"))[:3]
    seen = []
    real = preview.predict_images
    monkeypatch.setattr(preview, "predict_images", lambda images, *a, **k: seen.append(len(images)) or real(images, *a, **k))
    preds = preview.predict_many(photos, top_k=3, batch=2)
    assert [p.ok for p in preds] == [True, False, True, True, True]
    assert "not an image we can read" in preds[1].error and preds[1].file == "bad.jpg"
    assert seen == [1, 2, 1]  # batches of 2 photos, the bad one left out of its batch
    assert preds[0].exif_latitude is not None and preds[0].error_km > 0
    assert set(preds[2].timings_ms) >= {"decode", "encode", "search", "answer", "total"}
    one = preview.predict(photos[2], top_k=3, with_disk=False)
    assert one.path == preds[2].path  # the same answer alone or in a batch
