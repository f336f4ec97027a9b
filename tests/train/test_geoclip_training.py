"""Training in GeoCLIP's space: held-out cells, fresh pseudo-photos, sampled negatives,
folding for inference, and a short real run of `train --geoclip`."""

import json
import math

import numpy as np
import pytest
import torch

from hierloc.data import geoclip_space as gs
from tests.model.helpers import tiny_model, tiny_places


def test_held_out_cells_are_fixed_and_about_the_asked_share():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-89, 89, 50_000), rng.uniform(-180, 180, 50_000)
    test = gs.held_out(lat, lon)
    assert abs(test.mean() - gs.HOLDOUT_SHARE) < 0.02
    assert (gs.held_out(lat, lon) == test).all()  # no seed, no state
    # a cell is held out whole: points in the same 1-degree cell share the answer
    same = gs.held_out(np.floor(lat) + 0.01, np.floor(lon) + 0.01)
    assert (same == gs.held_out(np.floor(lat) + 0.99, np.floor(lon) + 0.99)).all()
    assert (gs.in_split(lat, lon, "train") == ~test).all() and gs.in_split(lat, lon, "all").all()
    with pytest.raises(ValueError, match="split"):
        gs.in_split(lat, lon, "val")


@pytest.mark.parametrize("where", ["cities", "gallery"])
def test_location_sources_draw_only_their_split(where):
    rng = np.random.default_rng(1)
    train = gs.LocationSource(where, "train")
    lat, lon = train.draw(3000, rng)
    assert len(lat) == 3000 and not gs.held_out(lat, lon).any()
    lat, lon = gs.LocationSource(where, "test").draw(500, rng)
    assert gs.held_out(lat, lon).all()
    with pytest.raises(ValueError, match="unknown photo locations"):
        gs.LocationSource("oceans")


def test_pseudo_photos_are_fresh_unit_features_with_the_benchmark_truth():
    from hierloc.eval.geoclip_bench import location_unit
    from hierloc.geo.places import default_places

    table = default_places()
    photos = gs.GeoClipPhotos(table, "cities", "train", noise_max=1.5)
    b1 = photos.batch(64, np.random.default_rng(0))
    b2 = photos.batch(64, np.random.default_rng(1))
    assert b1.feats.shape == (64, 512) and torch.allclose(b1.feats.norm(dim=1), torch.ones(64), atol=1e-5)
    assert not torch.equal(b1.feats, b2.feats)
    same = photos.batch(64, np.random.default_rng(0))
    assert torch.equal(b1.feats, same.feats) and torch.equal(b1.targets, same.targets)
    # targets: every level's local index is the benchmark truth's, and parents agree
    lat, lon = b1.latlon[:, 0].double().numpy(), b1.latlon[:, 1].double().numpy()
    rows = photos.rg.lookup(lat, lon)
    city = table.level_slice("city")
    assert (b1.targets[:, 3].numpy() == rows - city.start).all()
    parent_of_city = table.parent[rows] - table.level_slice("sub-region").start
    assert (b1.targets[:, 2].numpy() == parent_of_city).all()
    # noise level 0 gives the location feature itself
    clean = photos.batch(32, np.random.default_rng(3), level=0.0)
    loc = location_unit(photos.encoder, clean.latlon[:, 0].double().numpy(), clean.latlon[:, 1].double().numpy())
    assert torch.allclose(clean.feats, loc, atol=1e-4)
    noisy = photos.batch(500, np.random.default_rng(4), level=1.0)
    loc = location_unit(photos.encoder, noisy.latlon[:, 0].double().numpy(), noisy.latlon[:, 1].double().numpy())
    cos = (noisy.feats * loc).sum(1)
    assert 0.1 < float(cos.median()) < 0.6  # the calibrated blur, not a copy of the truth


def test_negative_sampler_keeps_positives_and_siblings_and_estimates_the_full_sum():
    from hierloc.train.loop import NegativeSampler

    table = tiny_places(n_countries=4, regions=3, subs=3, cities=6)
    counts = list(table.counts().values())
    sampler = NegativeSampler(table, max_negatives=20)
    assert sampler.active and sampler.children[0] is None  # countries always whole
    city = table.level_slice("city")
    rows_ = np.array([city.start, city.start + 55])  # two photos' cities and their ancestors
    tg = torch.as_tensor(np.stack([table.ancestor_at(rows_, lv) - table.level_slice(lv).start
                                   for lv in range(4)], 1))
    gen = torch.Generator().manual_seed(0)
    picks = sampler.sample(tg, gen)
    rows, log_w, local = picks[3]
    assert (rows[local] == tg[:, 3]).all()  # targets index into the sample
    for t in tg[:, 3].tolist():  # the true city's siblings are all there, weight 1
        parent = table.parent[city.start + t]
        sibs = [r - city.start for r in table.children(parent)]
        assert set(sibs) <= set(rows.tolist())
        assert all(float(log_w[rows.tolist().index(s)]) == 0.0 for s in sibs)
    # the weighted sum over a sample estimates the sum over every city
    values = torch.rand(counts[3], dtype=torch.float64)
    full = values.sum().item()
    est = []
    for _ in range(3000):
        rows, log_w, _ = sampler.sample(tg, gen)[3]
        est.append(float((values[rows] * log_w.double().exp()).sum()))
    assert abs(np.mean(est) - full) < 0.02 * full


def test_sampled_loss_matches_the_full_loss_when_the_sample_is_everything():
    from hierloc.train.loop import NegativeSampler, TrainStep

    table = tiny_places()
    torch.manual_seed(0)
    model = tiny_model(table, attention=False, place_features=(("location", 8),))
    model.eval()
    feats = torch.randn(5, 16)
    tg = torch.tensor([[0, 0, 0, 0], [1, 2, 5, 14], [2, 4, 9, 30], [0, 1, 2, 7], [2, 5, 11, 35]])
    latlon = torch.tensor([[10.0, 20.0]] * 5)
    full, _ = TrainStep(model)(feats, tg, latlon)
    assert TrainStep(model, NegativeSampler(table, max_negatives=10_000)).sampler is None  # nothing to sample
    every = NegativeSampler(table, max_negatives=4)
    every.max_negatives = 10_000  # the levels stay sampled, but the sample draws every place
    sampled, _ = TrainStep(model, every)(feats, tg, latlon)
    assert torch.allclose(full, sampled, atol=1e-5)
    small = NegativeSampler(table, max_negatives=4)  # sampled, with weights: the same order of size
    approx, _ = TrainStep(model, small)(feats, tg, latlon)
    approx, full = float(approx.detach()), float(full.detach())
    assert math.isfinite(approx) and abs(approx - full) < 0.5 * full


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_folded_model_answers_as_the_model_did(geometry, tmp_path):
    from hierloc.eval.evaluate import predict_features
    from hierloc.model.checkpoint import load_checkpoint, save_checkpoint

    table = tiny_places()
    torch.manual_seed(1)
    model = tiny_model(table, geometry=geometry, place_features=(("location", 8), ("image", 8)))
    with torch.no_grad():  # make the place encoder matter
        for p in model.place_mlp.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    folded = model.folded()
    assert folded.config.place_features == () and folded.config.extra["folded_place_features"] == ["location", "image"]
    feats = torch.randn(40, 16)
    a, b = model(feats), folded(feats)
    assert torch.allclose(a, b, atol=1e-4)
    for p, q in zip(model.place_points(), folded.place_points()):
        assert torch.allclose(p, q, atol=1e-4)
    save_checkpoint(folded, table, tmp_path / "f")
    loaded, _, _ = load_checkpoint(tmp_path / "f")
    assert not (tmp_path / "f" / "place_features.safetensors").exists()
    assert (predict_features(loaded, table, feats)[0] == predict_features(model, table, feats)[0]).all()


def test_train_geoclip_command_runs_resumes_and_exports(tmp_path):
    """A real, very short `train --geoclip` (2 steps): data, loop, checkpoint, export."""
    import subprocess
    import sys

    run = tmp_path / "run"
    small = ["max_steps=2", "batch_size=64", "val_photos=40", "log_every=2", "place_feature_photos=3000",
             "embed_dim=16", "hidden_dim=32", "minutes=0"]
    args = [sys.executable, "-m", "hierloc", "train", "--geoclip", "--out", str(run)]
    for s in small:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert rec[-1]["step"] == 2 and set(rec[-1]["val_acc"]) == {"country", "region", "sub-region", "city"}
    meta = json.loads((run / "last" / "config.json").read_text())
    assert meta["train"]["config"]["data"] == "geoclip" and meta["model"]["backbone"] == "geoclip"
    assert meta["model"]["feat_dim"] == 512 and meta["train"]["command"].startswith("python -m hierloc train --geoclip")
    assert "max_negatives" not in meta["train"]["command"]  # the command's own default
    assert meta["model"]["extra"]["geoclip"]["holdout"] == {"cell_deg": gs.CELL_DEG, "share": gs.HOLDOUT_SHARE}
    # the same command, run again from scratch, makes the same model (photos drawn by seed and step)
    again = [a if a != str(run) else str(tmp_path / "again") for a in args]
    out = subprocess.run(again, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    from hierloc.model.checkpoint import load_tensors

    first, second = load_tensors(run / "last", "model"), load_tensors(tmp_path / "again" / "last", "model")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # the same command with a larger step count resumes where it stopped
    args[args.index("max_steps=2")] = "max_steps=3"
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "last" / "config.json").read_text())["train"]["step"] == 3
    assert "resumed" in out.stderr
    exported = tmp_path / "ship"
    out = subprocess.run([sys.executable, "-m", "hierloc", "export", str(run / "last"), str(exported),
                          "--geometry-sample", "500"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    ship = json.loads((exported / "config.json").read_text())
    assert ship["model"]["place_features"] == [] and ship["geometry_check"]["places"]["city"] == 500
    assert not list(exported.glob("place_features*"))
    assert max(f.stat().st_size for f in exported.iterdir()) < 10 * 2 ** 20
    # its confidences fitted on validation photos and written into its config.json
    out = subprocess.run([sys.executable, "-m", "hierloc", "calibrate", str(exported), "--photos", "60",
                          "--check-photos", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    cal = json.loads((exported / "config.json").read_text())["model"]["extra"]["calibration"]
    assert len(cal["temperatures"]) == 4 and all(t > 0 for t in cal["temperatures"])
    assert cal["validation"]["cities"]["photos"] == 60 and "calibrate" in cal["command"] and cal["check"] == {}
    from hierloc.eval.evaluate import confidence_temperatures
    from hierloc.model.checkpoint import load_checkpoint

    assert confidence_temperatures(load_checkpoint(exported)[0]) == tuple(cal["temperatures"])


@pytest.mark.parametrize("radial", [False, True])
def test_pca_init_starts_photos_at_the_places_their_features_resemble(radial):
    from hierloc.train.loop import TrainData, pca_init

    table = tiny_places(n_countries=4, regions=3, subs=3, cities=4)
    g = torch.Generator().manual_seed(0)
    counts = list(table.counts().values())
    image = [torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1) for n in counts]
    model = tiny_model(table, embed_dim=8, hidden_dim=16, attention=False, place_features=(("image", 16),))
    for lv in range(4):
        getattr(model, f"feat_image_{lv}").copy_(image[lv])
    data = TrainData(table, None, None, None, None, {"image": image}, 16, {})
    info = pca_init(model, data, radial=radial)
    assert info["radial"] is radial
    model.eval()
    with torch.no_grad():
        z = model(image[3])  # a photo whose feature is exactly a city's
        pts = model.place_points()
        d = model.geometry.sq_dist_matrix(z, pts[3])
        own = d.diagonal()
    assert (d.argmin(1) == torch.arange(counts[3])).float().mean() > 0.9  # nearest city is its own
    if radial:  # cities start further out than their features alone, by the level's anchor norm
        r = model.geometry.norm_from_origin(pts[3]) - model.geometry.norm_from_origin(z)
        assert torch.allclose(r, torch.full_like(r, model.config.anchor_norms[3]), atol=0.05)
    else:
        assert float(own.max()) < 1e-2  # only the anchors (norm 0.01) apart
    with pytest.raises(ValueError, match="hidden_dim"):
        pca_init(tiny_model(table, embed_dim=8, hidden_dim=32, place_features=(("image", 16),)), data)


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_clamp_anchors_pulls_far_and_broken_anchors_back(geometry):
    from hierloc.manifold import lorentz as L

    table = tiny_places()
    model = tiny_model(table, geometry=geometry)
    a = model.anchor_3
    with torch.no_grad():
        t = model.anchor_tangent(3).clone()
        t[0] = t[0] / t[0].norm() * 9.0   # far out
        t[1] = float("nan")               # broken
        a.copy_(L.exp0(t, 1.0) if model.manifold_anchors else t)
        before = model.anchor_tangent(3)[2:].clone()
        assert model.clamp_anchors(4.0) == 2
        after = model.anchor_tangent(3).detach()
    assert torch.isfinite(after).all() and float(after.norm(dim=1).max()) <= 4.0 + 1e-4
    assert torch.allclose(after[0], t[0] / 9.0 * 4.0, atol=1e-3)  # same direction, pulled in
    assert torch.allclose(after[2:], before, atol=1e-5)            # the others untouched
