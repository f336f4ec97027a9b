"""`train --images`: a real folder of photos (47 openly licensed Im2GPS3k photos, resized,
and GPS-tagged camera files), with every kind of bad file, end to end offline."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierloc.train import own_photos as O

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def messy(tmp_path):
    """The photos, their labels, and what a real folder also holds."""
    folder = tmp_path / "trip"
    shutil.copytree(DATA / "im2gps3k_small", folder)
    labels = folder / "labels.csv"
    extra = folder / "camera"
    extra.mkdir()
    for name in ("DSCN0010.jpg", "Canon_40D.jpg", "corrupted.jpg", "HMD_Nokia_8.3_5G_hdr.heif"):
        shutil.copy(DATA / "exif" / name, extra / name)  # EXIF GPS, no GPS, broken EXIF, HEIF with GPS
    first = sorted(folder.glob("*.jpg"))[0]
    shutil.copy(first, folder / "copy of the first.jpg")  # a duplicate, by content
    (folder / "notes.txt").write_text("not a photo")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: not even looked at
    return folder, labels


def test_scan_says_what_each_file_is(messy):
    folder, labels = messy
    df = O.scan(folder, labels, progress=False)
    status = dict(zip(df["file"], df["status"]))
    assert status["notes.txt"] == "not an image" and status["empty.jpg"] == "not an image"
    assert status["copy of the first.jpg"] == "duplicate"
    assert status["camera/Canon_40D.jpg"] == "no GPS"
    assert status["camera/corrupted.jpg"] == "no GPS"  # broken EXIF: read as a photo, reported without GPS
    assert status["camera/DSCN0010.jpg"] == "ok"  # GPS from its EXIF (Arezzo)
    assert status["camera/HMD_Nokia_8.3_5G_hdr.heif"] == "ok"
    assert status["labels.csv"] == "labels file" and ".DS_Store" not in status
    ok = df[df["status"] == "ok"]
    assert (ok["gps_from"] == "labels").sum() == 47 and (ok["gps_from"] == "exif").sum() >= 2
    row = ok[ok["file"] == "camera/DSCN0010.jpg"].iloc[0]
    assert abs(row["latitude"] - 43.467) < 0.01
    lines = O.summary_lines(df)
    assert lines[0].startswith(f"found {len(df)} files: {len(ok)} photos with GPS")
    assert any("duplicate" in x and "the same content as" in x for x in lines)
    assert any("no GPS" in x for x in lines) and any("not an image" in x for x in lines)


def test_too_few_photos_is_a_plain_message(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    src = sorted((DATA / "im2gps3k_small").glob("*.jpg"))[:10]
    for p in src:
        shutil.copy(p, folder / p.name)
    with pytest.raises(O.TooFewPhotos, match=r"found 10 photos with GPS in \d+ places \(cities\); need at least 25"):
        O.prepare_run(folder, DATA / "im2gps3k_small" / "labels.csv", tmp_path / "run", backbone="efficientnet-lite0",
                      progress=False)


def test_split_is_by_location_and_fixed_by_the_seed():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-50, 60, 300), rng.uniform(-150, 150, 300)
    a, info = O.split_by_cells(lat, lon, seed=3)
    b, _ = O.split_by_cells(lat, lon, seed=3)
    c, _ = O.split_by_cells(lat, lon, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.1 < a.mean() < 0.5
    from hierloc.data.geoclip_space import cell_of

    cells = cell_of(lat, lon, info["cell_deg"])
    assert not set(cells[a]) & set(cells[~a])  # no cell on both sides
    # photos all in one city: finer cells, still a split
    d, info = O.split_by_cells(43.77 + rng.normal(0, 0.02, 60), 11.25 + rng.normal(0, 0.02, 60), seed=0)
    assert info["cell_deg"] < 1 and 0 < d.sum() < 60


@pytest.mark.slow
def test_train_images_end_to_end_and_the_model_answers(messy, tmp_path):
    folder, labels = messy
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hierloc", "train", "--images", str(folder), "--labels", str(labels),
           "--out", str(run), "--backbone", "efficientnet-lite0", "--set", "epochs=8"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "eval.json").read_text())
    n_ok = len(pd.read_csv(run / "photos.csv"))
    assert f"{n_ok} photos with GPS" in out.stdout and n_ok >= 49
    assert set(res["methods"]) == {"hierloc", "knn", "linear", "most_common", "preview"}
    # under 2,000 photos: 5 folds, every photo tested once; the run's model is trained on all
    assert res["folds"] == 5 and res["photos"]["test"] == res["photos"]["train"] == n_ok
    assert set(res["hierloc_minus"]) == {"knn", "linear", "most_common", "preview"}
    for p in res["hierloc_minus"].values():
        assert p["country"]["low"] <= p["country"]["diff"] <= p["country"]["high"] and "geoscore" in p
    for m in res["methods"].values():
        assert {"accuracy", "acc_km", "median_km", "geoscore"} <= set(m)
        assert set(m["acc_km"]) == {"1", "25", "200", "750", "2500"}
        assert 0 <= m["accuracy"]["country"] <= 1
    table = (run / "eval.md").read_text()
    assert "| HierLoc |" in table and "always the most common place" in table and "paired interval" in table
    problems = pd.read_csv(run / "problems.csv")
    assert {"not an image", "duplicate", "no GPS"} <= set(problems["status"])
    split = json.loads((run / "split.json").read_text())
    assert split["test"] == res["photos"]["test"] and split["backbone"] == "efficientnet-lite0"
    assert split["folds"] == 5 and sum(split["photos_per_fold"]) == n_ok
    # the run is a model: predict with it, over a folder, in batches
    pred = subprocess.run([sys.executable, "-m", "hierloc", "predict", str(folder / "camera"), "--model",
                           str(run / "last"), "--format", "jsonl"], capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-2000:]
    lines = [json.loads(x) for x in pred.stdout.splitlines()]
    assert len(lines) == 4 and sum(r["ok"] for r in lines) == 4 and not lines[0]["untrained"]
    # ... exported (folded), it answers the same way; and the app would pick it up by itself
    ckpt = tmp_path / "checkpoints" / "my-trip"
    exp = subprocess.run([sys.executable, "-m", "hierloc", "export", str(run / "last"), str(ckpt)],
                         capture_output=True, text=True, timeout=600)
    assert exp.returncode == 0, exp.stderr[-2000:]
    from hierloc.infer.predictor import load_predictor, resolve_model

    res_model = resolve_model(None, checkpoints_dir=ckpt.parent)
    assert res_model.profile == "trained" and res_model.source == str(ckpt)
    p = load_predictor(str(ckpt))
    assert p.profile == "trained" and not p.untrained and p.predict(folder / "camera" / "DSCN0010.jpg").ok
    # the same command again reads the cached features, and trains to the same model
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "features (" not in again.stderr
    assert json.loads((run / "eval.json").read_text())["methods"]["hierloc"] == res["methods"]["hierloc"]
