import re

import numpy as np
import pytest
import torch

from hierloc.manifold import lorentz as L
from hierloc.viz.disk import disk_figure, geodesic_arc, project
from hierloc.viz.map import great_circle, prediction_map, to_iframe


@pytest.fixture(scope="module")
def real():
    """A prediction of the real preview model over the offline hierarchy (real outlines)."""
    from hierloc.infer.predictor import Predictor, preview_engine

    engine = preview_engine()
    engine.view = None  # draw the preview's own places, so that its photo is drawn among them
    p = Predictor(engine)
    pred = p.predict(__import__("pathlib").Path(__file__).parents[1] / "data" / "exif" / "DSCN0010.jpg", top_k=5)
    return p, pred


def test_map_has_the_outlines_markers_and_no_cdn(real):
    p, pred = real
    m = prediction_map(pred, p.table, truth=(pred.exif_latitude, pred.exif_longitude))
    page = m.get_root().render()
    assert not re.findall(r'<(?:script|link)[^>]+(?:src|href)="https?://', page)  # Leaflet is inlined
    assert "L.geoJson" in page or "L.geoJSON" in page
    country = pred.path[0]["name"]
    assert f"Country: {country}" in page
    assert "True location" in page and "error:" in page
    assert page.count("L.circleMarker") >= 1 + len(pred.candidates)
    assert to_iframe(m).startswith("<iframe") and len(to_iframe(m)) < 2_000_000  # the page stays light


def test_disk_keeps_radii_exact_and_draws_the_photo(real):
    predictor, pred = real
    d = predictor.learned_disk_of(pred)
    pts = np.array([d["photo"]] + [p["point"] for p in d["places"]])
    xy = project(pts, d["geometry"], d["K"], fit_rows=slice(1, None))
    assert np.all(np.linalg.norm(xy, axis=1) < 1)
    # the Poincare radius encodes the exact hyperbolic distance from the origin
    r_disk = 2 * np.arctanh(np.linalg.norm(xy, axis=1))
    r_true = L.dist0(torch.as_tensor(pts, dtype=torch.float64)).numpy()
    assert np.allclose(r_disk, r_true, rtol=1e-6)
    fig = disk_figure(d)
    names = {t.name for t in fig.data}
    assert {"photo", "country", "region", "sub-region", "city"} <= names
    photo = next(t for t in fig.data if t.name == "photo")
    assert photo.marker.symbol == "star"
    hover = " ".join(" ".join(t.hovertext) for t in fig.data if t.hovertext is not None)
    assert "distance to photo" in hover and "distance from centre" in hover


def test_geodesic_arc_is_orthogonal_to_the_rim():
    p, q = np.array([0.5, 0.1]), np.array([-0.2, 0.6])
    arc = geodesic_arc(p, q)
    assert np.allclose(arc[0], p, atol=1e-9) and np.allclose(arc[-1], q, atol=1e-9)
    # points on a geodesic circle: |c|^2 = r^2 + 1 for its centre c and radius r
    a = np.c_[2 * arc, np.ones(len(arc))]
    sol, *_ = np.linalg.lstsq(a, (arc ** 2).sum(1), rcond=None)
    c, r2 = sol[:2], sol[2] + (sol[:2] ** 2).sum()
    assert (c ** 2).sum() == pytest.approx(r2 + 1, rel=1e-6)


def test_great_circle_splits_at_the_antimeridian():
    segs = great_circle(-17.7, 178.0, -14.3, -170.7)  # Fiji to Samoa
    assert len(segs) == 2
    segs = great_circle(48.85, 2.35, 51.5, -0.13)
    assert len(segs) == 1 and len(segs[0]) == 64


def test_world_layer_is_light_and_linked_to_the_hierarchy(real):
    import json

    from hierloc.viz.map import _world_features

    p, _ = real
    text = _world_features(p.table.content_hash(), p.table)
    world = json.loads(text)
    keys = {f["properties"]["k"] for f in world["features"]}
    assert len(world["features"]) >= 230 and len(text) < 300_000
    assert {"FR", "NO", "US", "JP", "BR", "NZ"} <= keys  # countries linked to the table's keys


def test_map_carries_the_answers_distribution(real):
    """The choropleth's numbers are the prediction's: every country's probability, and the
    regions of the two likeliest countries; the map stays under 1.5 MB."""
    import json

    p, pred = real
    dist = pred.distribution
    assert abs(sum(dist["country"].values()) - 1) < 1e-3  # every country (those >= 1e-5)
    assert dist["country"][pred.path[0]["key"]] == pytest.approx(pred.path[0]["confidence"], abs=1e-4)
    top2 = sorted(dist["country"], key=lambda k: -dist["country"][k])[:2]
    assert {k.rsplit("_", 1)[-1] for k in dist["region"]} == set(top2)
    page = prediction_map(pred, p.table).get_root().render()
    assert "var pc = " + json.dumps(dist["country"]) in page
    best = max(dist["country"], key=dist["country"].get)
    assert f'data-key=\\"{best}\\" data-p=\\"{dist["country"][best]}\\"' in page  # the legend, in a JS string
    assert len(to_iframe(prediction_map(pred, p.table)).encode()) < 1_500_000
    # switched off: the world still draws, no choropleth
    plain = prediction_map(pred, p.table, show_probability=False).get_root().render()
    assert "hl-land" in plain and "var pc = {};" in plain  # no probabilities: the JS draws no choropleth


def test_the_faster_map_is_the_same_page(real):
    """Raw elements (no Jinja compile of the inlined Leaflet and the world) and outlines
    simplified once: the same page, byte for byte, its random element ids aside."""
    import folium

    from hierloc.viz import map as M

    p, pred = real
    norm = lambda h: re.sub(r"[0-9a-f]{32}", "ID", h)  # noqa: E731
    now = norm(M.prediction_map(pred, p.table).get_root().render())
    raw = M.raw_element
    try:
        M.raw_element = folium.Element
        before = norm(M.prediction_map(pred, p.table).get_root().render())
    finally:
        M.raw_element = raw
    assert now == before
