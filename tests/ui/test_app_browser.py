"""The real app in a real browser (Debian chromium via playwright) and through its API."""

from pathlib import Path

import pytest
from PIL import Image

from tests.ui.fakes import free_port

CHROMIUM = "/usr/bin/chromium"
EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "517681129360654.jpg"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def preview():
    from hierloc.infer.predictor import Predictor, preview_engine

    return Predictor(preview_engine())


@pytest.fixture(scope="module")
def app_url(preview):
    from hierloc.paths import ASSETS_DIR
    from hierloc.ui import handlers as H
    from hierloc.ui.app import build_demo, launch_options

    session = H.Session(default_profile="preview", available=["preview"], loader=lambda p: preview,
                        examples=H.load_examples(ASSETS_DIR / "examples"))
    demo = build_demo(session)
    opts = {**launch_options(), "server_name": "127.0.0.1", "server_port": free_port()}
    demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, quiet=True, **opts)
    yield f"http://127.0.0.1:{opts['server_port']}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def test_upload_a_photo_and_see_path_map_and_disk(app_url, browser, preview, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app_url)
    page.wait_for_selector("#hl-photo input[type=file]", state="attached", timeout=60_000)
    page.set_input_files("#hl-photo input[type=file]", str(EXAMPLE))
    page.wait_for_selector("#hl-result .hl-name", timeout=60_000)
    result = page.inner_text("#hl-result")
    assert "untrained: not a real prediction" in result
    assert "True location: Saint Columb Major" in result
    country = page.inner_text("#hl-result .hl-step .hl-name").strip().split(" ")[-1]
    # the map: Leaflet drew the predicted country's outline (an SVG path) inside the iframe
    frame = page.frame_locator("#hl-map iframe")
    frame.locator("path.leaflet-interactive").first.wait_for(timeout=30_000)
    assert frame.locator("path.leaflet-interactive").count() >= 3
    srcdoc = page.get_attribute("#hl-map iframe", "srcdoc")
    assert f"Country: {country}" in srcdoc
    page.screenshot(path=str(tmp_path / "map.png"), full_page=True)
    # the disk: the atlas, with the photo placed by the answer's own distribution
    page.get_by_role("tab", name="Poincare disk").click()
    page.wait_for_selector("#hl-disk polygon.hl-atlas-photo", timeout=30_000)
    answer = preview.predict(EXAMPLE).disk["atlas"]  # the same model, the same photo
    assert page.inner_text("#hl-disk .hl-atlas-depth") == "The photo: " + answer["text"]
    for key in answer["path"]:
        assert page.locator(f'#hl-disk circle[data-key="{key}"]').count() == 1
    assert page.locator("#hl-disk path.hl-atlas-arc").count() >= 4  # geodesics to the path's places
    _shot(page, "#hl-disk", tmp_path, "locate_disk.png")
    # the learned geometry, one click away: the shipped checkpoint's places; the preview's
    # untrained photo feature does not live there, so the photo is not drawn among them
    page.get_by_text("Checkpoint: the places as the trained HierLoc checkpoint holds them").click()
    page.wait_for_selector("#hl-disk-learned .js-plotly-plot .scatterlayer", timeout=30_000)
    legend = page.text_content("#hl-disk-learned .legend")
    assert "city" in legend and "country" in legend
    assert preview.engine.place_view().trained and "photo" not in legend
    assert "trained HierLoc checkpoint" in page.text_content("#hl-disk-learned .infolayer")
    assert page.locator("#hl-disk-learned .scatterlayer .trace .points path").count() > 5
    _shot(page, "#hl-disk-learned", tmp_path, "disk_learned.png")
    assert not page.locator("#hl-disk").is_visible()
    assert (tmp_path / "map.png").stat().st_size > 10_000
    page.close()


def _shot(page, selector, tmp_path, name):
    """Screenshot an element (into HIERLOC_SCREENSHOTS when set, to be looked at)."""
    import os

    folder = Path(os.environ.get("HIERLOC_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.locator(selector).screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 5_000


def _points(page, disk):
    """Every drawn place of a disk: key -> (x, y) in the unit disk (y up), role, level."""
    return page.evaluate("""(sel) => Array.from(document.querySelectorAll(sel + ' circle.hl-atlas-pt')).map(c => ({
        key: c.dataset.key, x: +c.getAttribute('cx'), y: -c.getAttribute('cy'), level: +c.dataset.level,
        role: Array.from(c.classList).find(k => k.startsWith('hl-role-')).slice(8), focus: c.dataset.focus === '1'}))""",
                         disk)


def _wait_focus(page, disk, key):
    page.wait_for_selector(f'{disk} circle[data-key="{key}"][data-focus="1"]', timeout=60_000)


def test_explore_is_the_atlas_and_clicks_recentre(app_url, browser, preview, tmp_path):
    """Explore opens on the Earth; France shows its 22 regions around it in their order on
    the map; a click brings a region to the centre; Back returns."""
    import numpy as np

    from hierloc.manifold.atlas import geo_bearing

    table = preview.table
    disk = "#hl-explore-disk"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url)
    page.get_by_role("tab", name="Explore the hierarchy").click()
    _wait_focus(page, disk, "earth")
    pts = _points(page, disk)
    assert sum(p["level"] == 0 for p in pts) == table.level_size(0)
    assert "246 countries" in page.inner_text(f"{disk} .hl-atlas-caption")
    assert "Room grows exponentially" in page.inner_text("#hl-why")
    _shot(page, disk, tmp_path, "explore_earth.png")
    # France, by search
    page.fill("#hl-search textarea, #hl-search input", "France")
    page.keyboard.press("Enter")
    _wait_focus(page, disk, "FR")
    page.wait_for_timeout(300)
    pts = {p["key"]: p for p in _points(page, disk)}
    assert (pts["FR"]["x"], pts["FR"]["y"]) == (0.0, 0.0)
    fr = table.index("FR")
    regions = [str(k) for k in table.key[table.children(fr)]]
    assert len(regions) == 22 and all(pts[k]["role"] == "child" for k in regions)
    drawn = np.arctan2([pts[k]["y"] for k in regions], [pts[k]["x"] for k in regions])
    rows = [table.index(k) for k in regions]
    bearing = geo_bearing(table.lat_deg[fr], table.lon_deg[fr], table.lat_deg[rows], table.lon_deg[rows])
    assert _cyclic(drawn) == _cyclic(bearing)
    page.wait_for_function("() => document.querySelector('#hl-place-info').innerText.includes('22 regions')",
                           timeout=30_000)
    _shot(page, disk, tmp_path, "explore_france.png")
    # a click on a region brings it to the centre, by the animated isometry
    idf = table.key[table.get("Ile-de-France_FR")]
    page.locator(f'{disk} circle[data-key="{idf}"]').click()
    _wait_focus(page, disk, idf)
    pts = {p["key"]: p for p in _points(page, disk)}
    assert (pts[idf]["x"], pts[idf]["y"]) == (0.0, 0.0) and pts["FR"]["role"] == "ancestor"
    assert "France" in page.inner_text(f"{disk} .hl-atlas-crumbs")
    page.wait_for_function("() => document.querySelector('#hl-place-info').innerText.includes('Ile-de-France')",
                           timeout=30_000)
    _shot(page, disk, tmp_path, "explore_region.png")
    # a city
    city = next(p for p in pts.values() if p["level"] == 2 and p["role"] == "child")
    page.locator(f'{disk} circle[data-key="{city["key"]}"]').click()
    _wait_focus(page, disk, city["key"])
    kid = next(p for p in _points(page, disk) if p["role"] == "child" and p["level"] == 3)
    page.locator(f'{disk} circle[data-key="{kid["key"]}"]').click()
    _wait_focus(page, disk, kid["key"])
    _shot(page, disk, tmp_path, "explore_city.png")
    # Back, three times: the sub-region, the region, France
    for key in (city["key"], idf, "FR"):
        page.click(f"{disk} .hl-atlas-back")
        _wait_focus(page, disk, key)
    # the flag is an image, not an emoji
    assert page.locator("#hl-place-info img.hl-flag").count() == 1
    page.close()


def _cyclic(angles):
    import numpy as np

    order = list(np.argsort(np.mod(angles, 2 * np.pi), kind="stable"))
    k = order.index(min(order))
    return order[k:] + order[:k]


def test_explore_a_place_by_name(app_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app_url)
    page.get_by_role("tab", name="Explore the hierarchy").click()
    page.fill("#hl-search textarea, #hl-search input", "Paris")
    page.keyboard.press("Enter")
    page.wait_for_selector('#hl-explore-disk circle[data-focus="1"]:not([data-key="earth"])', timeout=60_000)
    page.wait_for_function("() => document.querySelector('#hl-place-info').innerText.includes('Paris')",
                           timeout=30_000)
    # the distances table has its headers and every column on screen
    headers = page.locator("#hl-distances th").all_inner_texts()
    assert [h.strip() for h in headers[:4]] == ["place", "level", "relation", "distance"]
    box = page.locator("#hl-distances").bounding_box()
    last = page.locator("#hl-distances th").nth(3).bounding_box()
    assert last["x"] + last["width"] <= box["x"] + box["width"] + 1
    page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
    page.close()


def _bad_files(tmp_path) -> dict:
    files = {}
    (tmp_path / "text.jpg").write_text("this is not a photo")
    files["text.jpg"] = "not an image we can read"
    (tmp_path / "empty.jpg").write_bytes(b"")
    files["empty.jpg"] = "empty"
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    files["one.png"] = "only 1x1"
    Image.new("1", (30000, 30000)).save(tmp_path / "bomb.png")
    files["bomb.png"] = "too large"
    good = EXAMPLE.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    files["cut.jpg"] = "truncated"
    return files


def test_bad_inputs_through_the_api_and_the_app_keeps_answering(app_url, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    for name, message in _bad_files(tmp_path).items():
        out = client.predict(handle_file(str(tmp_path / name)), 10, 3, True, "preview", api_name="/predict")
        assert out["ok"] is False and message in out["error"], (name, out)
    # odd but valid images are read: CMYK, 16-bit, animated GIF
    Image.new("CMYK", (64, 48), (0, 128, 128, 0)).save(tmp_path / "cmyk.jpg")
    import numpy as np
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(tmp_path / "deep.png")
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("cmyk.jpg", "deep.png", "anim.gif"):
        out = client.predict(handle_file(str(tmp_path / name)), 10, 3, True, "preview", api_name="/predict")
        assert out["ok"] is True, (name, out)
    out = client.predict(handle_file(str(EXAMPLE)), 10, 3, True, "preview", api_name="/predict")
    assert out["ok"] and out["untrained"] and len(out["candidates"]) == 3
    assert [p["level"] for p in out["path"]] == ["country", "region", "sub-region", "city"]


def test_example_click_locates_and_map_click_explores(app_url, browser, preview, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url)
    page.get_by_text("Ferron, Utah, US").click()
    page.wait_for_selector("#hl-result .hl-name", timeout=60_000)
    assert "True location: Ferron, Utah, US" in page.inner_text("#hl-result")
    # the photo in the atlas: its depth label is the one its distribution gives
    page.get_by_role("tab", name="Poincare disk").click()
    page.wait_for_selector("#hl-disk polygon.hl-atlas-photo", timeout=30_000)
    label = page.inner_text("#hl-disk .hl-atlas-depth")
    labels = __import__("pandas").read_csv(EXAMPLE.parent / "labels.csv", dtype=str, keep_default_na=False)
    example = EXAMPLE.parent / labels.loc[labels["city"] == "Ferron", "file"].iloc[0]
    answer = preview.predict(example).disk["atlas"]
    depth, share = _depth_from_distribution(preview.table, answer)
    words = ("Not sure even of the country" if depth < 0 else
             f"down to the {['country', 'region', 'sub-region', 'city'][depth]}: ")
    assert label.startswith("The photo: ") and words in label and f"{100 * share:.0f}%" in label
    _shot(page, "#hl-disk", tmp_path, "locate_disk_ferron.png")
    # Explore: a click on the map is posted to the page, which looks the point up
    page.get_by_role("tab", name="Explore the hierarchy").click()
    page.fill("#hl-search textarea, #hl-search input", "Haridwar")
    page.keyboard.press("Enter")
    frame = page.frame_locator("#hl-explore-map iframe.hierloc-map")
    page.wait_for_function("() => document.querySelector('#hl-place-info').innerText.includes('Haridwar')",
                           timeout=60_000)
    frame.locator(".leaflet-container").wait_for(timeout=60_000)
    before = page.inner_text("#hl-place-info .hl-path-inline")
    box = frame.locator(".leaflet-container").bounding_box()
    frame.locator(".leaflet-container").click(position={"x": box["width"] * 0.15, "y": box["height"] * 0.2})
    page.wait_for_function("(b) => { const e = document.querySelector('#hl-place-info .hl-path-inline'); "
                           "return e && e.innerText !== b; }", arg=before, timeout=60_000)
    assert "India" in page.inner_text("#hl-place-info .hl-path-inline")
    # the disk followed the map: the clicked city is its centre
    page.wait_for_selector('#hl-explore-disk circle[data-focus="1"][data-level="3"]', timeout=30_000)
    page.close()


def _depth_from_distribution(table, answer: dict) -> tuple[int, float]:
    """The depth an answer's distribution gives, recomputed here: the deepest place of
    its path holding more than half of the cities' probability, and that share."""
    weight = {k: w for k, w in answer["cities"]}
    masses = []
    for lv, key in enumerate(answer["path"]):
        row = table.index(key)
        masses.append(sum(w for k, w in weight.items() if table.ancestor_at([table.index(k)], lv)[0] == row))
    depth = max([lv for lv in range(4) if masses[lv] > 0.5], default=-1)
    return depth, masses[depth] if depth >= 0 else masses[0]


def _locate_example(page, app_url):
    page.goto(app_url)
    page.wait_for_selector("#hl-photo input[type=file]", state="attached", timeout=60_000)
    page.set_input_files("#hl-photo input[type=file]", str(EXAMPLE))
    page.wait_for_selector("#hl-result .hl-name", timeout=60_000)
    frame = page.frame_locator("#hl-map iframe")
    frame.locator("#hl-legend").wait_for(timeout=30_000)
    return frame


def test_offline_map_shows_the_world_and_where_else_it_could_be(app_url, browser, preview, tmp_path):
    """No network here: the tiles never come, yet the land layer draws every country, and
    the choropleth and its legend carry the same probabilities as the answer's JSON."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    frame = _locate_example(page, app_url)
    # the land layer, under the tiles: far more outlines than the predicted country's
    assert frame.locator(".leaflet-hl-land-pane path").count() >= 200
    # the choropleth: one interactive shape per country at least, shaded by probability
    assert frame.locator(".leaflet-overlay-pane path.leaflet-interactive").count() >= 200
    expected = preview.predict(EXAMPLE).distribution["country"]  # the answer's JSON, same model
    tops = frame.locator("#hl-legend .hl-top")
    assert tops.count() == 3
    best = sorted(expected.items(), key=lambda kv: -kv[1])[:3]
    for i, (key, p) in enumerate(best):
        assert tops.nth(i).get_attribute("data-key") == key
        assert float(tops.nth(i).get_attribute("data-p")) == pytest.approx(p)
        assert tops.nth(i).inner_text().endswith(f"{100 * p:.1f}%")
    # it can be switched off: the legend goes with it
    frame.locator(".leaflet-control-layers-overlays input").uncheck()
    frame.locator("#hl-legend").wait_for(state="detached", timeout=10_000)
    assert frame.locator(".leaflet-hl-land-pane path").count() >= 200  # the world stays
    frame.locator(".leaflet-control-layers-overlays input").check()
    page.locator("#hl-map").screenshot(path=str(tmp_path / "map_offline.png"))
    page.close()


def test_many_photos_at_once(app_url, browser, tmp_path):
    """Good and bad files together: a row each, the bad one with its reason, one map, and
    the results as a CSV that downloads."""
    import zipfile

    photos = sorted(EXAMPLE.parent.glob("*.jpg"))[:3]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    trip = tmp_path / "trip.zip"
    with zipfile.ZipFile(trip, "w") as zf:
        zf.write(photos[1], photos[1].name)
        zf.write(photos[2], "day2/" + photos[2].name)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url)
    page.get_by_role("tab", name="Many photos").click()
    page.wait_for_selector("#hl-many input[type=file]", state="attached", timeout=60_000)
    page.set_input_files("#hl-many input[type=file]", [str(photos[0]), str(bad), str(trip)])
    page.wait_for_timeout(500)
    page.click("#hl-many-go")
    page.wait_for_selector("#hl-many-summary .hl-batch-summary", timeout=120_000)
    assert "3 of 4 files located" in page.inner_text("#hl-many-summary")
    table = page.inner_text("#hl-many-table")
    for p in photos:
        assert p.name in table
    assert "notes.jpg" in table and "not an image we can read" in table
    assert "Saint Columb Major" in table or "Haridwar" in table  # the examples' labels give the truth
    frame = page.frame_locator("#hl-many-map iframe")
    frame.locator("path.hl-guess").first.wait_for(timeout=30_000)
    assert frame.locator("path.hl-guess").count() == 3
    files_text = page.inner_text("#hl-many-files").replace("\n", "")
    assert "hierloc_results.csv" in files_text and "hierloc_results.geojson" in files_text
    with page.expect_download() as dl:
        page.locator("#hl-many-files a").first.click()  # the first result: the CSV
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("path,ok,error") and len(text.splitlines()) == 5
    page.screenshot(path=str(tmp_path / "many.png"), full_page=True)
    page.close()


def test_many_photos_with_a_labels_file_are_scored(app_url, browser, tmp_path):
    """Real photos and their labels CSV dropped together: the answers are scored in the
    page, the model's row beside the most common place."""
    src = Path(__file__).resolve().parents[1] / "data" / "im2gps3k_small"
    photos = sorted(src.glob("*.jpg"))[:6]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url)
    page.get_by_role("tab", name="Many photos").click()
    page.wait_for_selector("#hl-many input[type=file]", state="attached", timeout=60_000)
    page.set_input_files("#hl-many input[type=file]", [*map(str, photos), str(src / "labels.csv")])
    page.wait_for_timeout(500)
    page.click("#hl-many-go")
    page.wait_for_selector("#hl-many-summary .hl-eval-table", timeout=120_000)
    summary = page.inner_text("#hl-many-summary")
    assert "Scored on the 6 photos whose true location is known" in summary
    assert "always the most common place of these photos" in summary and "GeoScore" in summary
    assert "labels.csv" not in page.inner_text("#hl-many-table")  # the labels are not a photo
    page.screenshot(path=str(tmp_path / "many_scored.png"), full_page=True)
    page.close()
