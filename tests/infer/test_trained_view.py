"""The disk and Explore draw the shipped checkpoint's places whatever profile answers,
and the profiles resolve as the README says."""

import numpy as np
import pytest
import torch

from hierloc.infer import predictor as P
from tests.model.test_shipped_checkpoint import SHIPPED


def test_resolution_with_the_shipped_geoclip_checkpoint(monkeypatch):
    import hierloc.hub

    monkeypatch.delenv("HIERLOC_MODEL", raising=False)
    assert P.geoclip_checkpoint() == SHIPPED
    assert P.checkpoint_backbone(SHIPPED) == P.GEOCLIP_BACKBONE
    # offline, without CLIP weights: the labelled preview (the checkpoint cannot read photos)
    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(hierloc.hub, "cached_file", lambda *a, **k: None)
    r = P.resolve_model(None)
    assert r.profile == "preview"
    # with CLIP weights: the profile the benchmark chose; the other stays selectable
    monkeypatch.setattr(hierloc.hub, "cached_file", lambda *a, **k: "/cache/model.safetensors")
    r = P.resolve_model(None)
    assert r.profile == P.DEFAULT_WITH_CLIP and "benchmark" in r.reason
    other = "zero-shot" if P.DEFAULT_WITH_CLIP == "trained" else "trained"
    assert P.resolve_model(other).profile == other
    # asking for the trained checkpoint offline says what it needs
    monkeypatch.setattr(hierloc.hub, "cached_file", lambda *a, **k: None)
    with pytest.raises(P.ModelUnavailable, match="CLIP ViT-L/14"):
        P.load_predictor("trained")


@pytest.fixture(scope="module")
def preview():
    return P.Predictor(P.preview_engine())


def test_preview_disk_and_explore_draw_the_trained_places(preview, data_dir):
    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.viz.disk import disk_figure, place_disk

    view = preview.engine.place_view()
    assert view.trained and view.stats and "hierloc-geoclip" in view.label and view.photo is None
    model, table, _ = load_checkpoint(SHIPPED)
    trained_points = model.place_points()
    pred = preview.predict(data_dir / "exif" / "landscape_1.jpg")
    assert pred.ok and pred.untrained
    disk = preview.learned_disk_of(pred)
    assert disk["photo"] is None and disk["trained"] and disk["view"] == view.label
    for place in disk["places"]:
        lv = ["country", "region", "sub-region", "city"].index(place["level"])
        local = place["row"] - table.level_slice(lv).start
        assert np.allclose(place["point"], trained_points[lv][local].numpy(), atol=1e-5)
    fig = disk_figure(disk)
    assert any("not drawn" in (a.text or "") for a in fig.layout.annotations)
    # Explore: a country and its regions at the trained positions, regions further out
    fr = table.get("FR") if table.get("FR") is not None else table.level_slice(0).start
    explore, dists = place_disk(preview.engine, table, int(fr))
    assert explore["trained"] and len(dists) > 3
    me = next(p for p in explore["places"] if p["row"] == int(fr))
    assert np.allclose(me["point"], trained_points[0][int(fr)].numpy(), atol=1e-5)


def test_zero_shot_photo_joins_the_trained_places_through_the_checkpoint_head():
    """The zero-shot engine's photo point carries GeoCLIP's feature; the view maps it with
    the checkpoint's head (no CLIP weights needed to check the mapping)."""
    from hierloc.data.place_features import load_geoclip_location_encoder
    from hierloc.eval.geoclip_bench import location_unit
    from hierloc.geo.places import default_places
    from hierloc.infer import zeroshot as zs
    from hierloc.model.checkpoint import load_checkpoint

    table = default_places()
    view = P.trained_view(table, "geoclip")
    model, _, _ = load_checkpoint(SHIPPED)
    u = location_unit(load_geoclip_location_encoder(), np.array([48.8566]), np.array([2.3522]))  # Paris
    z = zs.photo_points(u)
    with torch.no_grad():
        # the same point (photos of this model lie far out, about 15 from the origin, where
        # float32 coordinates reach 1e6: compare relatively)
        assert torch.allclose(view.photo(z), model(u), rtol=1e-4, atol=1e-4)
        d = model.geometry.sq_dist_matrix(view.photo(z), view.level_points[0])
    assert str(table.key[table.level_slice(0).start + int(d.argmin())]) == "FR"


def test_about_text_quotes_the_geometry_numbers(preview):
    from hierloc.ui.handlers import geometry_about

    text = geometry_about(preview)
    stats = preview.engine.place_view().stats
    assert f"{100 * stats['farther_than_parent']['all']:.0f}%" in text and "trained HierLoc checkpoint" in text
    # the atlas first, with the numbers `atlas stats` measured (shipped, rechecked in test_atlas)
    assert text.index("**atlas**") < text.index("One click away")
    # and how the shipped checkpoint's places got there (its config.json: left where the recipe built them)
    assert "left there: training fitted the photo head, not the places" in text
    assert "Measured on all 164,985 places: 100% lie further" in text


def test_places_origin_reads_the_recipe_of_the_checkpoint():
    assert "left there" in P.places_origin({"train": {"recipe": {"place_lr_scale": [0, 0, 0, 0]}}})
    assert P.places_origin({"train": {"recipe": {"place_lr_scale": [1, 1, 0, 0]}}}) == "trained with the rest of the model"
    assert P.places_origin({"train": {"config": {}}}) == "trained with the rest of the model"
    assert P.places_origin({}) == ""


class _FixedImagePath:
    """Stands in for CLIP + GeoCLIP's image head: every photo gets the same GeoCLIP feature
    (a scaled one: the engine must not rely on it being a unit vector)."""

    def __init__(self, u):
        self.u = u

    def preprocess(self, images):
        return torch.zeros(len(images), 1)

    def __call__(self, px):
        return 3.0 * self.u.expand(len(px), -1)


def test_trained_engine_answers_at_the_attended_point_and_draws_the_photo_through_its_head(monkeypatch, data_dir):
    """The trained profile end to end (the image path faked: no CLIP weights here): its GPS
    is the support point it attends to most inside the answered city (HierLoc.attended_gps),
    each candidate's inside its own city, and the disk's photo is the checkpoint's own point."""
    from hierloc.data.place_features import load_geoclip_location_encoder
    from hierloc.eval.geoclip_bench import location_unit
    from hierloc.infer import zeroshot as zs

    gallery = zs.gallery_latlon()
    in_france = (gallery[:, 0] > 43) & (gallery[:, 0] < 49) & (gallery[:, 1] > 0) & (gallery[:, 1] < 7)
    at = gallery[np.flatnonzero(in_france)[0]]  # a gallery point in Provence, 17 km from its city's own point
    u = location_unit(load_geoclip_location_encoder(), at[:1], at[1:])
    monkeypatch.setattr(zs, "image_path_for", lambda *a, **k: _FixedImagePath(u))
    predictor = P.Predictor(P.trained_engine(str(SHIPPED)))
    pred = predictor.predict(data_dir / "exif" / "landscape_1.jpg")
    assert pred.ok and pred.profile == "trained" and pred.path[0]["key"] == "FR"
    assert set(pred.distribution["country"]) >= {"FR"} and pred.distribution["region"]
    model, table, _ = P._load_cached(str(SHIPPED))
    with torch.no_grad():
        z, attention = model.located(u)
    city = table.level_slice(3).start + int(np.flatnonzero(table.key[table.level_slice(3)] == pred.path[3]["key"])[0])
    assert [pred.latitude, pred.longitude] != [float(table.lat_deg[city]), float(table.lon_deg[city])]
    assert abs(pred.latitude - at[0]) < 0.01 and abs(pred.longitude - at[1]) < 0.01  # the photo's own point
    for cand in pred.candidates:  # each candidate's GPS lies within its own city (or is its centroid)
        row = table.level_slice(3).start + int(np.flatnonzero(table.key[table.level_slice(3)] == cand["path"][3]["key"])[0])
        local = torch.tensor([[row - table.level_slice(3).start]])
        want = model.attended_gps(attention, local)[0, 0]
        assert (cand["latitude"], cand["longitude"]) == pytest.approx((float(want[0]), float(want[1])))
    disk = predictor.learned_disk_of(pred)
    assert torch.allclose(torch.tensor(disk["photo"]), z[0], rtol=1e-4, atol=1e-4)
    # what is shown is one distribution over the tree with the checkpoint's fitted temperatures
    import json

    from hierloc.eval.evaluate import confidence_temperatures, level_scores
    from hierloc.infer.beam import Hierarchy
    from hierloc.infer.confidence import tree_log_marginals

    stored = json.loads((SHIPPED / "config.json").read_text())["model"]["extra"]["calibration"]
    temps = confidence_temperatures(model)
    assert temps == tuple(stored["temperatures"]) and temps != (1.0, 1.0, 1.0, 1.0)
    with torch.no_grad():
        marg = tree_log_marginals(level_scores(model, z, model.place_points()), Hierarchy.from_table(table).parents,
                                  temps)
    for lv, place in enumerate(pred.path):
        local = int(np.flatnonzero(table.key[table.level_slice(lv)] == place["key"])[0])
        assert place["confidence"] == pytest.approx(float(marg[lv][0, local].exp()), abs=1e-4)
    assert [p["confidence"] for p in pred.path] == sorted((p["confidence"] for p in pred.path), reverse=True)
    assert pred.distribution["country"]["FR"] == pytest.approx(pred.path[0]["confidence"], abs=1e-4)
    probs = [c["probability"] for c in pred.candidates]
    assert probs[1:] == sorted(probs[1:], reverse=True)  # after the answer, most probable first
    atlas = pred.disk["atlas"]  # the disk places the photo by the same numbers, and says so plainly
    assert atlas["basis"] == "" and atlas["masses"][0] == pytest.approx(pred.path[0]["confidence"], abs=1e-3)
