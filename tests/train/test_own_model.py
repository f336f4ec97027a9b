"""The own-photos recipe (train.own_model): a prior it learns, features it answers by,
folds of whole cells, its baselines, and a checkpoint that answers the same after a reload."""

import numpy as np
import pytest
import torch

from hierloc.geo.places import default_places
from hierloc.train import own_model as M


@pytest.fixture(scope="module")
def geo():
    return default_places()


def _photos(geo, shares: dict, n: int, signal: float, seed: int = 0, dim: int = 32):
    """n photos at real GeoNames cities of the countries in ``shares`` (their share of the
    photos), many cities each, so that every country spans many location cells. Features:
    noise, plus ``signal`` times a direction of their country."""
    rng = np.random.default_rng(seed)
    sl = geo.level_slice("city")
    cc = geo.country_code[sl]
    codes = list(shares)
    which = rng.choice(len(codes), size=n, p=np.array(list(shares.values())) / sum(shares.values()))
    rows = np.empty(n, dtype=np.int64)
    for i, code in enumerate(codes):
        cities = np.flatnonzero(cc == code)[::50][:40] + sl.start  # 40 cities spread over the country
        m = which == i
        rows[m] = rng.choice(cities, size=int(m.sum()))
    direction = np.eye(dim)[: len(codes)] * signal
    feats = rng.normal(size=(n, dim)) + direction[which]
    return M.photos_of(geo, feats, geo.lat_deg[rows], geo.lon_deg[rows], rows), np.array(codes)[which]


def _split(p, seed=0):
    fold, _ = M.cell_folds(p.lat, p.lon, 4, seed)
    return p.take(fold != 0), p.take(fold == 0)


CFG = M.OwnConfig(epochs=10, embed_dim=8, hidden_dim=16)


def test_no_signal_in_the_features_answers_the_prior(geo):
    photos, _ = _photos(geo, {"US": 0.7, "FR": 0.15, "JP": 0.15}, 300, signal=0.0)
    train, test = _split(photos)
    table = geo.subset(train.rows[:, 3])
    model, report = M.fit(table, geo, train, CFG, "test-features")
    got = M.predict(model, table, test)
    assert np.mean(got["keys"]["country"] == "US") >= 0.95  # the most common country, nearly always
    assert report["calibration"]["temperatures"] and len(report["calibration"]["temperatures"]) == 4
    # and the most common place baseline says the same
    mc = M.most_common_predict(geo, train, len(test))
    assert set(mc["keys"]["country"]) == {"US"}


def test_features_that_carry_the_place_are_answered_by(geo):
    photos, codes = _photos(geo, {"US": 0.5, "FR": 0.25, "JP": 0.25}, 300, signal=4.0, seed=1)
    train, test = _split(photos)
    table = geo.subset(train.rows[:, 3])
    model, _ = M.fit(table, geo, train, CFG, "test-features")
    got = M.predict(model, table, test)
    truth = test.keys(geo)["country"]
    assert np.mean(got["keys"]["country"] == truth) >= 0.95
    assert (got["keys"]["country"] != "US").sum() >= 0.3 * len(test)  # not the prior's answer


def test_folds_are_whole_cells_and_test_every_photo_once(geo):
    photos, _ = _photos(geo, {"US": 0.5, "FR": 0.5}, 300, signal=0.0, seed=2)
    fold, info = M.cell_folds(photos.lat, photos.lon, 5, seed=3)
    again, _ = M.cell_folds(photos.lat, photos.lon, 5, seed=3)
    assert np.array_equal(fold, again) and set(fold) == set(range(5))
    assert sum(info["photos_per_fold"]) == len(photos)
    assert max(info["photos_per_fold"]) - min(info["photos_per_fold"]) <= 0.25 * len(photos) / 5 + 10
    c, _ = M.cells(photos.lat, photos.lon, min_cells=10)
    for f in range(5):
        assert not set(c[fold == f]) & set(c[fold != f])  # no cell on both sides
    with pytest.raises(ValueError, match="fewer than"):
        M.cell_folds(np.zeros(30), np.zeros(30), 5)


def test_a_photo_never_attends_to_its_own_cell(geo):
    photos, _ = _photos(geo, {"US": 0.5, "FR": 0.5}, 120, signal=0.0, seed=4)
    table = geo.subset(photos.rows[:, 3])
    model = M.build(table, geo, photos, CFG, "test-features")
    cell = torch.as_tensor(photos.cell)
    with torch.no_grad():
        idx, a = model.support_attention(photos.feats, exclude=cell)
        _, a_all = model.support_attention(photos.feats)
    own = model.support_group[idx] == cell[:, None]
    assert float(a[own].sum()) == 0.0 and torch.allclose(a.sum(1), torch.ones(len(photos)))
    assert float(a_all.max()) > float(a.max())  # its own photo, cos 1, was the largest weight


def test_baselines_pick_their_settings_and_answer(geo):
    photos, _ = _photos(geo, {"US": 0.5, "FR": 0.25, "JP": 0.25}, 300, signal=4.0, seed=5)
    train, test = _split(photos)
    preds, chosen = M.baselines(geo, train, test)
    assert set(preds) == {"knn", "linear", "most_common"}
    assert chosen["knn"]["k"] in M.KNN_K and chosen["linear"]["weight_decay"] in M.LINEAR_DECAY
    truth = test.keys(geo)["country"]
    for name in ("knn", "linear"):
        assert np.mean(preds[name]["keys"]["country"] == truth) >= 0.9, name
        assert len(preds[name]["lat"]) == len(test)


def test_a_saved_model_answers_the_same_after_a_reload(geo, tmp_path):
    from hierloc.model.checkpoint import load_checkpoint, save_checkpoint

    photos, _ = _photos(geo, {"US": 0.5, "FR": 0.25, "JP": 0.25}, 200, signal=2.0, seed=6)
    train, test = _split(photos)
    table = geo.subset(train.rows[:, 3])
    model, _ = M.fit(table, geo, train, CFG, "test-features")
    before = M.predict(model, table, test)
    save_checkpoint(model, table, tmp_path / "ckpt")
    loaded, ltable, meta = load_checkpoint(tmp_path / "ckpt")
    assert loaded.scores_memory and meta["model"]["extra"]["calibration"]["temperatures"]
    after = M.predict(loaded, ltable, test)
    for lv in before["keys"]:
        assert np.array_equal(before["keys"][lv], after["keys"][lv])
    assert np.allclose(before["lat"], after["lat"]) and np.allclose(before["lon"], after["lon"])


# ---------------------------------------------------------------------------------------
# the shipped model sharpened on a region (GeoCLIP-space pseudo-photos: a proxy)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.paths import CHECKPOINTS_DIR

    model, table, _ = load_checkpoint(CHECKPOINTS_DIR / "hierloc-geoclip")
    return model, table


def _region_photos(table, n, seed):
    from hierloc.data.pseudo_photos import CALIBRATED, photo_features
    from hierloc.eval import geoclip_bench as gb
    from hierloc.geo.reverse import benchmark_geocoder

    lat, lon = gb.region_locations(table, "Utah_US", n, seed=seed)
    from hierloc.data.place_features import load_geoclip_location_encoder

    u = photo_features(load_geoclip_location_encoder(), lat, lon, CALIBRATED, seed=seed + 10)
    rows = benchmark_geocoder(table).lookup(lat, lon)
    from hierloc.data.geoclip_space import cell_of

    return M.photos_of(table, u, lat, lon, rows, np.asarray(cell_of(lat, lon, 0.25)))


@pytest.mark.slow
def test_sharpened_on_a_region_it_gains_there_keeps_the_world_and_reloads(shipped, tmp_path):
    from hierloc.model.checkpoint import load_checkpoint, save_checkpoint

    base, table = shipped
    photos = _region_photos(table, 500, seed=21)
    cells = np.unique(photos.cell)
    test_cells = np.random.default_rng(0).permutation(cells)[: len(cells) // 3]
    is_test = np.isin(photos.cell, test_cells)
    yours, test = photos.take(~is_test), photos.take(is_test)
    world = M.world_guard(table, n=100)
    model, report = M.sharpen(base, table, table, yours, world=world)
    assert model.remembers_your_photos and len(report["weights"]) == 4 and report["floor"] in M.YOUR_FLOORS
    truth = test.keys(table)
    got, before = M.predict(model, table, test), M.predict(base, table, test)
    right = {lv: np.mean(got["keys"][lv] == truth[lv]) for lv in ("country", "region")}
    right0 = {lv: np.mean(before["keys"][lv] == truth[lv]) for lv in ("country", "region")}
    assert right["region"] >= right0["region"] + 0.05  # Utah's photos: the region is learned
    # the world guard holds: on the guard's own photos no level fell by more than the tolerance
    chosen = report["tried"][str(report["floor"])]["world_right"]
    assert all(c >= u - M.WORLD_TOLERANCE - 1e-9 for c, u in zip(chosen, report["world_right_unchanged"]))
    # weights 0: the scores are the base model's (only the answer is read from the tree)
    zero = M.with_your_photos(base, table, M.your_memory(table, yours.lat, yours.lon), [0, 0, 0, 0])
    from hierloc.eval.evaluate import level_scores

    with torch.no_grad():
        z, att = base.located(test.feats[:8])
        a = level_scores(base, z, base.place_points(), att)
        b = level_scores(zero, z, base.place_points(), att, test.feats[:8])
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not base.remembers_your_photos
    # saved and loaded, it answers the same
    save_checkpoint(model, table, tmp_path / "sharp")
    loaded, ltable, meta = load_checkpoint(tmp_path / "sharp")
    assert loaded.remembers_your_photos and meta["model"]["extra"]["your_photos"]["weights"] == report["weights"]
    again = M.predict(loaded, ltable, test)
    folded = M.predict(model.folded(), table, test)  # `hierloc export`
    for lv in truth:
        assert np.array_equal(again["keys"][lv], got["keys"][lv])
        assert np.array_equal(folded["keys"][lv], got["keys"][lv])
    (tmp_path / "sharp" / "your_photos.safetensors").unlink()
    from hierloc.model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="your_photos"):
        load_checkpoint(tmp_path / "sharp")


@pytest.mark.slow
def test_train_images_with_clip_features_sharpens_the_shipped_model(shipped, tmp_path):
    """train --images's run with features in GeoCLIP's space (pseudo-photos standing in for
    CLIP's: the weights are not here): every fold sharpens the shipped model, and the run's
    model is the shipped one remembering every photo."""
    import pandas as pd

    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.train import own_photos as O

    base, table = shipped
    photos = _region_photos(table, 150, seed=31)
    fold, _ = M.cell_folds(photos.lat, photos.lon, 3)
    df = pd.DataFrame({"file": [f"p{i}.jpg" for i in range(len(photos))], "latitude": photos.lat,
                       "longitude": photos.lon, "city_key": table.key[photos.rows[:, 3]], "fold": fold})
    prepared = O.Prepared(table.subset(photos.rows[:, 3]), df, photos.feats, "geoclip", 3)
    folder, res = O.run(prepared, tmp_path / "run", tmp_path, world=M.world_guard(table, n=50))
    assert set(res["methods"]) == {"hierloc", "knn", "linear", "most_common"}
    assert res["photos"]["test"] == len(photos) and len(res["fits"]) == 3
    assert all("weights" in f for f in res["fits"])
    model, ltable, meta = load_checkpoint(folder)
    assert model.remembers_your_photos and meta["model"]["extra"]["your_photos"]["count"] == len(photos)
    assert ltable.content_hash() == table.content_hash() and meta["train"]["recipe"] == "sharpened"
    json_ok = O.markdown({**res, "backbone": "geoclip"})
    assert "| HierLoc |" in json_ok
