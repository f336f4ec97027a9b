"""The GeoCLIP-space recipe (train.geoclip_recipe): its bank of photos, its teacher,
its losses, and a short real run of `train --geoclip-recipe` that a person could load."""

import json

import numpy as np
import pytest
import torch

from hierloc.train import geoclip_recipe as R


@pytest.fixture(scope="module")
def table():
    from hierloc.geo.places import default_places

    return default_places()


@pytest.fixture(scope="module")
def bank(table):
    return R.FeatureBank(table, 300, seed=3)


def test_bank_holds_training_cells_with_the_benchmark_truth_and_draws_fresh_noise(table, bank):
    from hierloc.data.pseudo_photos import held_out
    from hierloc.geo.reverse import benchmark_geocoder

    assert len(bank) == 600  # both photo sources
    lat, lon = bank.latlon[:, 0].double().numpy(), bank.latlon[:, 1].double().numpy()
    assert not held_out(lat, lon).any()
    rows = benchmark_geocoder(table).lookup(lat, lon)
    city = table.level_slice("city")
    assert np.array_equal(bank.targets[:, 3].numpy(), rows - city.start)
    assert np.array_equal(bank.targets[:, 0].numpy(),
                          table.ancestor_at(rows, 0) - table.level_slice("country").start)
    g = torch.Generator().manual_seed(0)
    u1, t1, _ = bank.batch(64, g, (1.0, 1.0))
    assert torch.allclose(u1.norm(dim=1), torch.ones(64), atol=1e-5)
    clean, _, _ = bank.batch(64, torch.Generator().manual_seed(0), (0.0, 0.0))
    # noise level 0: the location's own feature; level 1 strays far from it
    idx = torch.randint(len(bank), (64,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(clean, bank.clean[idx].float(), atol=2e-3)
    assert float((u1 * clean).sum(1).mean()) < 0.6


def test_gallery_share_sets_how_many_photos_of_a_batch_stand_at_gallery_locations(bank):
    half = len(bank) // 2  # cities first, then gallery locations
    for share in (0.0, 0.8, 1.0):
        u, t, latlon = bank.batch(2000, torch.Generator().manual_seed(1), (0.0, 0.0), share)
        rows = (u @ bank.clean.float().T).argmax(1)  # noise level 0: each photo is its location's feature
        assert torch.allclose(u, bank.clean[rows].float(), atol=2e-3)
        assert abs(float((rows >= half).float().mean()) - share) < 0.04
        assert torch.equal(t, bank.targets[rows]) and torch.equal(latlon, bank.latlon[rows])
    with pytest.raises(ValueError, match="gallery_share"):
        R.RecipeConfig(gallery_share=1.5)


def test_level_weights_weigh_each_levels_infonce_in_the_total():
    from hierloc.train.loop import NegativeSampler
    from tests.model.helpers import targets_for, tiny_model, tiny_places

    places = tiny_places()
    model = tiny_model(places, geometry="lorentz", attention=False)
    feats = torch.randn(12, model.config.feat_dim)
    targets = targets_for(places, torch.arange(12) % places.level_size(3))
    latlon = torch.zeros(12, 2)

    def loss(weights):
        return R.recipe_loss(model, NegativeSampler(places, 8), feats, targets, latlon, 0.5,
                             torch.Generator().manual_seed(0), weights)

    even, per_level, _, _ = loss((1.0, 1.0, 1.0, 1.0))
    assert torch.allclose(even, sum(per_level.values()))
    weighted, _, _, _ = loss((0.0, 2.0, 0.0, 1.0))
    assert torch.allclose(weighted, 2 * per_level[1] + per_level[3])
    with pytest.raises(ValueError, match="level_weights"):
        R.RecipeConfig(level_weights=(1.0, -1.0, 1.0, 1.0))


def test_distillation_loss_is_smallest_when_the_student_says_what_the_teacher_says(table):
    from tests.model.helpers import tiny_model, tiny_places

    model = tiny_model(tiny_places(), geometry="lorentz", attention=False)
    z = model(torch.randn(8, model.config.feat_dim))
    geom = model.geometry
    with torch.no_grad():
        own = [-geom.sq_dist_matrix(z, geom.to_point(model.place_tangents(lv))) / model.criterion.tau for lv in range(2)]
    n1 = own[1].shape[1]
    cols = torch.arange(n1).expand(8, -1)
    same = R.distill_loss(model, z, own[0], cols, own[1])
    other = R.distill_loss(model, z, own[0].flip(1), cols, own[1].flip(1))
    assert float(same.detach()) < float(other.detach())


@pytest.mark.parametrize("head", ["support", "mlp"])
def test_recipe_command_trains_a_model_that_loads_and_searches_by_path(tmp_path, capsys, head):
    from hierloc.cli import main
    from hierloc.eval.evaluate import predict_features, search_score
    from hierloc.model.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["train", "--geoclip-recipe", "--out", str(run), "--set", "bank=300", "--set", "teacher_photos=256",
            "--set", "max_steps=4", "--set", "eval_every=2", "--set", "val_photos=30", "--set", "embed_dim=16",
            "--set", "hidden_dim=64", "--set", "batch_size=64", "--set", "tree_sample=32",
            "--set", f'photo_head="{head}"', "--set", "attention_weight=1.0"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["checkpoint"].endswith("best")
    hist = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in hist] == [0, 2, 4]
    assert all(np.isfinite(h["loss"]) for h in hist[1:])
    model, table, meta = load_checkpoint(run / "last")
    assert search_score(model) == "path" and model.config.embed_dim == 16
    assert model.config.photo_head == head
    if head == "support":  # every city's own point and the gallery, the hash kept to refuse others
        assert model.config.support_points > table.level_size(3)
        assert len(meta["model"]["extra"]["support_hash"]) == 64
        assert all(np.isfinite(h["attention"]) for h in hist[1:])
        assert not model.photo_mlp[-1].weight.any()  # by default the image MLP's residual stays zero
    assert meta["train"]["command"].startswith("python -m hierloc train --geoclip-recipe")
    assert "--set max_steps=4" in meta["train"]["command"]
    best, _ = predict_features(model, table, torch.nn.functional.normalize(torch.randn(5, 512), dim=-1))
    for lv in range(1, 4):  # a path of the tree
        par = table.parent[table.level_slice(lv)][best[:, lv]] - table.level_slice(lv - 1).start
        assert np.array_equal(par, best[:, lv - 1])
    assert main(["train", "--geoclip-recipe", "--set", "nonsense=1"]) != 0
    with pytest.raises(ValueError, match="one factor"):
        R.RecipeConfig(place_lr_scale=(1.0, 1.0))


def test_ema_decay_validates_and_saves_the_average_of_the_weights(tmp_path):
    from hierloc.cli import main
    from hierloc.model.checkpoint import load_checkpoint

    def run(name, decay):
        args = ["train", "--geoclip-recipe", "--out", str(tmp_path / name), "--set", "bank=300",
                "--set", "max_steps=3", "--set", "eval_every=1", "--set", "val_photos=30", "--set", "embed_dim=16",
                "--set", "batch_size=64", "--set", "tree_sample=32", "--set", f"ema_decay={decay}"]
        assert main(args) == 0
        state = lambda f: {k: v for k, v in load_checkpoint(tmp_path / name / f)[0].state_dict().items()
                           if k.startswith("anchor_") or k.startswith("support_")}
        return state("best"), state("last")

    # an average that barely moves: every step validates the warm start, which stays the best
    start, still = run("slow", 0.999999)
    assert all(torch.allclose(start[k], still[k], atol=1e-4) for k in start)
    _, moved = run("live", 0.0)
    assert any(not torch.allclose(start[k], moved[k], atol=1e-3) for k in start)
    with pytest.raises(ValueError, match="ema_decay"):
        R.RecipeConfig(ema_decay=1.0)


def test_analytic_support_prior_is_the_photos_location_density_fixed_or_as_a_start(tmp_path, table):
    import math

    from hierloc.cli import main
    from hierloc.model.checkpoint import load_checkpoint
    from hierloc.model.support import location_log_prior

    def run(name, prior):
        args = ["train", "--geoclip-recipe", "--out", str(tmp_path / name), "--set", "bank=300",
                "--set", "max_steps=3", "--set", "eval_every=3", "--set", "val_photos=30", "--set", "embed_dim=16",
                "--set", "batch_size=64", "--set", "tree_sample=32", "--set", f'support_prior="{prior}"']
        assert main(args) == 0
        return load_checkpoint(tmp_path / name / "last")

    model, _, meta = run("fixed", "analytic")
    expected = location_log_prior(table, model.config.support_points, 0.5)
    assert torch.equal(model.support_bias.detach(), expected)  # trained 3 steps, never moved
    assert not model.support_kind_bias.any() and float(model.support_population_weight.detach()) == 0.0
    assert float(model.log_support_temperature.detach()) == pytest.approx(math.log(150.0))
    assert "analytic" in meta["model"]["extra"]["warm_start"]["prior"]
    assert "--set support_prior=" in meta["train"]["command"]
    started, _, _ = run("start", "analytic-start")
    moved = (started.support_bias.detach() - expected).abs()
    assert float(moved.max()) > 1e-3  # the prior is learned from there
    with pytest.raises(ValueError, match="support_prior"):
        R.RecipeConfig(support_prior="flat")
