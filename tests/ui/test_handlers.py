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
    html, map_html, fig, table, answer = H.locate(session, path, 10, 3, True, "trained")
    assert "hl-name" in html and "T0000" in html and "Preview" not in html
    assert map_html.startswith("<iframe") and "leaflet" in map_html.lower()
    assert fig is not None and any(t.name == "photo" for t in fig.data)
    assert isinstance(table, pd.DataFrame) and len(table) == 3 and list(table.columns) == H.CANDIDATE_COLUMNS
    assert answer["ok"] and answer["path"][3]["key"].startswith("T0000")
    assert not (tmp_path / "up.jpg").exists()  # privacy: the temporary upload is gone


def test_untrained_banner_in_the_page(tmp_path):
    pred = fake_predictor(untrained=True)
    session = H.Session(default_profile="preview", available=["preview"], loader=lambda p: pred)
    html, *_ , answer = H.locate(session, _photo(tmp_path), 10, 3, True, None)
    assert "untrained: not a real prediction" in html and answer["banner"]


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"%PDF-1.4 text", "not an image we can read")])
def test_bad_files_give_a_plain_message(session, tmp_path, content, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    html, map_html, fig, table, answer = H.locate(session, str(bad), 10, 3, True, None)
    assert message in html and "hl-error" in html and "Traceback" not in html
    assert fig is None and len(table) == 0 and answer["ok"] is False


def test_example_truth_is_shown(session, tmp_path):
    ex = H.Example(tmp_path / "ex.jpg", 10.0, 20.0, "Somewhere, XX", "someone")
    Image.new("RGB", (64, 48)).save(ex.file)
    session.examples = {"ex.jpg": ex}
    html, map_html, *_, answer = H.locate(session, str(ex.file), 10, 3, True, None)
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
    key = session.predictor().table.key[session.predictor().table.level_slice("region").start]
    info, fig, map_html, dists = H.explore(session, str(key))
    assert "children" in info and fig is not None and map_html.startswith("<iframe")
    assert set(dists["relation"]) == {"ancestor", "child"} and (dists["hyperbolic distance"] > 0).all()
    info, fig, *_ = H.explore(session, None)
    assert fig is None


def test_explore_click(session):
    t = session.predictor().table
    row = t.level_slice("city").start
    info, fig, *_ = H.explore_click(session, f"{t.lat_deg[row]},{t.lon_deg[row]}")
    assert fig is not None and t.name[row] in info
    info, fig, *_ = H.explore_click(session, "not,a point")
    assert fig is None
