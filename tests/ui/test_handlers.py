import pandas as pd
import pytest
from PIL import Image

from hierloc.ui import handlers as H
from tests.ui.fakes import fake_predictor


@pytest.fixture()
def session():
    pred = fake_predictor()
    return H.Session(default_profile="trained", available=["trained"], loader=lambda p: pred)


def _photo(tmp_path, name="up.jpg"):
    path = tmp_path / name
    Image.new("RGB", (64, 48), (90, 120, 200)).save(path)
    return str(path)


def test_locate_returns_all_outputs_and_forgets_the_upload(session, tmp_path):
    path = _photo(tmp_path)
    html, map_html, view, fig, table, answer, learned = H.locate(session, path, 10, 3, True, "trained")
    assert "hl-name" in html and "T0000" in html and "Preview" not in html
    assert map_html.startswith("<iframe") and "leaflet" in map_html.lower()
    # the atlas disk: the photo placed by the answer, the answer's path among the points
    assert view["kind"] == "atlas" and view["photo"]["text"] and view["photo"]["path"][3].startswith("T0000")
    assert set(view["photo"]["path"]) <= set(view["points"]["key"])
    assert fig is None and "z" in learned  # the learned figure is drawn only when asked for
    fig = H.learned_figure(learned)
    assert any(t.name == "photo" for t in fig.data)
    *_, fig2, _, _, _ = H.locate(session, _photo(tmp_path, "b.jpg"), 10, 3, True, "trained", "learned")
    assert fig2 is not None
    assert isinstance(table, pd.DataFrame) and len(table) == 3 and list(table.columns) == H.CANDIDATE_COLUMNS
    assert answer["ok"] and answer["path"][3]["key"].startswith("T0000")
    assert not (tmp_path / "up.jpg").exists()  # privacy: the temporary upload is gone


def test_untrained_banner_in_the_page(tmp_path):
    pred = fake_predictor(untrained=True)
    session = H.Session(default_profile="preview", available=["preview"], loader=lambda p: pred)
    html, *_, answer, _ = H.locate(session, _photo(tmp_path), 10, 3, True, None)
    assert "untrained: not a real prediction" in html and answer["banner"]


def test_raw_percentages_are_said_to_be_raw():
    from hierloc.infer.predictor import Prediction

    path = [{"level": lv, "key": k, "name": k, "confidence": 0.5, "latitude": 0.0, "longitude": 0.0}
            for lv, k in zip(("country", "region", "sub-region", "city"), ("FR", "FR.93", "FR.93.04", "1"))]
    raw = Prediction(ok=True, profile="trained", path=path, latitude=1.0, longitude=2.0, country_code="FR")
    assert "raw scores" in H.result_html(raw)
    fitted = Prediction(ok=True, profile="trained", calibrated=True, path=path, latitude=1.0, longitude=2.0,
                        country_code="FR")
    assert "raw scores" not in H.result_html(fitted) and "50%" in H.result_html(fitted)


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"%PDF-1.4 text", "not an image we can read")])
def test_bad_files_give_a_plain_message(session, tmp_path, content, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    html, map_html, view, fig, table, answer, learned = H.locate(session, str(bad), 10, 3, True, None)
    assert message in html and "hl-error" in html and "Traceback" not in html
    assert "points" not in view and fig is None and len(table) == 0 and answer["ok"] is False and learned is None


def test_example_truth_is_shown(session, tmp_path):
    ex = H.Example(tmp_path / "ex.jpg", 10.0, 20.0, "Somewhere, XX", "someone")
    Image.new("RGB", (64, 48)).save(ex.file)
    session.examples = {"ex.jpg": ex}
    html, map_html, *_, answer, _ = H.locate(session, str(ex.file), 10, 3, True, None)
    assert "True location: Somewhere, XX" in html and "km</b> from the guess" in html
    assert answer["example_truth"]["error_km"] > 0
    assert ex.file.exists()  # examples are never deleted


def test_no_photo(session):
    html, *_ = H.locate(session, None, 10, 3, True, None)
    assert "Drop a photo" in html


def test_api_json(session, tmp_path):
    out = H.predict_api(session, _photo(tmp_path), 10, 2, True, None)
    assert out["ok"] and len(out["candidates"]) == 2 and "disk" not in out


def test_search_and_explore(session):
    matches = H.search_places(session, "t00")
    assert matches and all("T00" in label for label, _ in matches)
    assert H.search_places(session, "x") == []
    t = session.predictor().table
    key = str(t.key[t.level_slice("region").start])
    earth = H.explore_view(session, None)
    assert earth["focus"] == "earth" and earth["points"]["role"][0] == "focus"
    view = H.explore_view(session, key, earth)
    assert view["focus"] == key and view["move"]["from"] == "earth"
    info, map_html, dists, why, fig = H.explore_panels(session, view)
    assert "sub-region" in info and map_html.startswith("<iframe") and fig is None
    assert list(dists.columns) == H.DISTANCE_COLUMNS
    assert set(dists["relation"]) == {"ancestor", "child"} and (dists["distance"] > 0).all()
    assert "the Earth" in list(dists["place"]) and "Room grows" in why
    *_, fig = H.explore_panels(session, view, "learned")
    assert fig is not None
    info, *_ = H.explore_panels(session, earth)
    assert "The Earth" in info
    assert H.explore_view(session, "no such place", view) is view  # an unknown key keeps the view


def test_disk_click_recentres_with_the_photo(session, tmp_path):
    import json

    _, _, view, *_ = H.locate(session, _photo(tmp_path), 10, 3, True, None)
    t = session.predictor().table
    country = view["photo"]["path"][0]
    moved = H.atlas_refocus(session, json.dumps(view["state"]), country)
    assert moved["focus"] == country and moved["photo"]["text"] == view["photo"]["text"]
    i = moved["points"]["key"].index(country)
    assert (moved["points"]["x"][i], moved["points"]["y"][i]) == (0.0, 0.0)
    assert H.atlas_refocus(session, "{not json", "earth")["focus"] == "earth"  # a broken state: no photo, no crash
    assert "photo" not in H.atlas_refocus(session, json.dumps({"photo": {"cities": [["x", 1]]}}), "earth")
    assert H.atlas_refocus(session, json.dumps(view["state"]), "no such key") is None
    del t


def test_explore_click(session):
    t = session.predictor().table
    row = t.level_slice("city").start
    view = H.explore_click(session, f"{t.lat_deg[row]},{t.lon_deg[row]}")
    assert view["focus"] == t.key[row]
    assert H.explore_click(session, "not,a point", view) is view


def test_locate_many_answers_each_file_and_forgets_the_uploads(session, tmp_path):
    import json
    import zipfile
    from pathlib import Path

    good = [_photo(tmp_path, f"p{i}.jpg") for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    trip = tmp_path / "trip.zip"
    with zipfile.ZipFile(trip, "w") as zf:
        zf.write(good[2], "day1/inner.jpg")
        zf.writestr("../../evil.txt", "x")  # a path outside: read as a plain file name, never written outside
        zf.writestr("day1/", "")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 nothing")
    calls = []
    progress = lambda frac, desc="": calls.append(frac)  # noqa: E731
    summary, map_html, rows, files = H.locate_many(session, [str(good[0]), str(good[1]), str(bad), str(trip),
                                                            str(broken)], 10, None, progress)
    assert list(rows["file"]) == ["p0.jpg", "p1.jpg", "bad.jpg", "inner.jpg", "evil.txt", "broken.zip"]
    problems = dict(zip(rows["file"], rows["problem"]))
    assert problems["p0.jpg"] == "" and problems["inner.jpg"] == ""
    assert "not an image we can read" in problems["bad.jpg"] and "zip" in problems["broken.zip"]
    assert "3 of 6 files located" in summary and "iframe" in map_html
    assert calls and calls[-1] == 1.0
    assert not (tmp_path.parent / "evil.txt").exists()
    csv_text = open(files[0]).read().splitlines()
    assert csv_text[0].startswith("path,ok,error") and len(csv_text) == 6  # one line per photo (zips opened)
    geo = json.load(open(files[1]))
    assert sum(f["geometry"] is not None for f in geo["features"]) == 3
    for p in (good[0], good[1], bad, trip, broken):  # the uploads are gone
        assert not Path(p).exists()


def test_locate_many_without_files_says_what_to_do(session):
    summary, _, rows, files = H.locate_many(session, [], 10)
    assert "Drop several photos" in summary and rows.empty and files is None


@pytest.mark.slow
def test_many_photos_with_labels_scores_them_as_eval_images_does(tmp_path, data_dir):
    """Photos dropped with a labels CSV: the page's scores for the model that answers are
    the numbers `eval --images` gives on the same photos, beside the most common place."""
    import shutil

    from hierloc.eval.folder import evaluate_folder
    from hierloc.infer.predictor import Predictor, preview_engine

    preview = Predictor(preview_engine())
    session = H.Session(default_profile="preview", available=["preview"], loader=lambda p: preview)
    src = data_dir / "im2gps3k_small"
    names = sorted(p.name for p in src.glob("*.jpg"))[:8]
    folder = tmp_path / "photos"
    folder.mkdir()
    labels = pd.read_csv(src / "labels.csv")
    labels = labels[labels["file"].isin(names)][["file", "latitude", "longitude"]]
    labels.to_csv(folder / "labels.csv", index=False)
    ref = evaluate_folder(src, folder / "labels.csv", predictor=preview)
    uploads = []
    for n in names:
        shutil.copy(src / n, tmp_path / n)
        uploads.append(str(tmp_path / n))
    shutil.copy(folder / "labels.csv", tmp_path / "labels.csv")
    summary, _, rows, _ = H.locate_many(session, uploads + [str(tmp_path / "labels.csv")], 10, None)
    assert "Scored on the 8 photos whose true location is known" in summary
    assert "always the most common place of these photos" in summary
    assert set(rows["true location"].str.contains("labels")) == {True}
    res = H.batch_evaluation(preview.predict_many([src / n for n in names]), labels[["latitude", "longitude"]].values)
    for lv in ("country", "region"):
        assert res["model"]["accuracy"][lv] == pytest.approx(ref["accuracy"][lv])
    assert res["model"]["median_km"] == pytest.approx(ref["median_km"])
    assert f"{ref['median_km']:,.1f}" in summary
