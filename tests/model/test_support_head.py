"""The support-attention photo head (ModelConfig.photo_head = "support"): attention over
support points with the places' tangents as values, checked against a hand computation."""

import numpy as np
import pytest
import torch

from hierloc.model.config import ModelConfig
from hierloc.model.hierloc import HierLoc, level_latlon
from tests.model.helpers import tiny_places


def _support(table, feat_dim=16, extra=5, seed=0):
    """The cities' own points first (as model.support builds them), then `extra` more."""
    g = torch.Generator().manual_seed(seed)
    n_city = table.level_size(3)
    city = torch.cat([torch.arange(n_city), torch.randint(n_city, (extra,), generator=g)])
    starts = [table.level_slice(lv).start for lv in range(4)]
    rows = city.numpy() + starts[3]
    anc = [torch.as_tensor(table.ancestor_at(rows, lv) - starts[lv]) for lv in range(4)]
    unit = torch.nn.functional.normalize(torch.randn(len(city), feat_dim, generator=g), dim=-1)
    logpop = torch.cat([torch.randn(n_city, generator=g), torch.zeros(extra)])
    return {"unit": unit, "ancestors": anc, "hash": "test", "log_population": logpop}


def _model(table, support, topk, **kw):
    cfg = ModelConfig(feat_dim=16, num_places=tuple(table.counts().values()), embed_dim=8, hidden_dim=16,
                      dropout=0.0, attention=False, photo_head="support", support_points=len(support["unit"]),
                      support_topk=topk, support_temperature=5.0, anchor_space="tangent", **kw)
    return HierLoc(cfg, [torch.from_numpy(a) for a in level_latlon(table)], support=support)


def test_support_head_is_the_attention_mix_of_place_tangents():
    table = tiny_places()
    sup = _support(table)
    S = len(sup["unit"])
    model = _model(table, sup, topk=S).eval()
    with torch.no_grad():
        model.support_bias.copy_(torch.randn(S, generator=torch.Generator().manual_seed(1)))
        model.support_kind_bias.copy_(torch.tensor([0.3, -0.2]))
        model.support_population_weight.fill_(0.7)
        model.level_mix.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    v = model.photo_tangent(x)
    # by hand: softmax over every support point of T cos + bias + kind bias + w log population
    u = torch.nn.functional.normalize(x, dim=-1)
    kind = torch.tensor([0] * table.level_size(3) + [1] * (S - table.level_size(3)))
    logits = (5.0 * u @ sup["unit"].T + model.support_bias + torch.tensor([0.3, -0.2])[kind]
              + 0.7 * sup["log_population"])
    a = torch.softmax(logits, dim=1)
    tang = model.place_cache()
    want = sum(model.level_mix[lv] * a @ tang[lv][sup["ancestors"][lv]] for lv in range(4))
    assert torch.allclose(v, want.detach(), atol=1e-5)  # the image MLP starts as a zero residual


def test_top_k_keeps_the_largest_logits_and_gradients_reach_the_prior_and_the_places():
    table = tiny_places()
    sup = _support(table, extra=20)
    model = _model(table, sup, topk=6).train()
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    idx, a = model.support_attention(x)
    assert idx.shape == (5, 6) and torch.allclose(a.sum(1), torch.ones(5))
    full = 5.0 * torch.nn.functional.normalize(x, dim=-1) @ sup["unit"].T
    assert torch.equal(torch.sort(idx, 1).values, torch.sort(full.topk(6, dim=1).indices, 1).values)
    v = model.photo_tangent(x)
    v.pow(2).sum().backward()
    assert model.support_bias.grad is not None and model.support_bias.grad.abs().sum() > 0
    assert model.anchor_3.grad.abs().sum() > 0 and model.log_support_temperature.grad is not None
    untouched = torch.ones(len(sup["unit"]), dtype=torch.bool)
    untouched[idx.reshape(-1)] = False
    assert float(model.support_bias.grad[untouched].abs().sum()) == 0.0  # only the attended points learn


def test_support_head_refuses_missing_or_mismatched_support_points():
    table = tiny_places()
    sup = _support(table)
    cfg = ModelConfig(feat_dim=16, num_places=tuple(table.counts().values()), embed_dim=8, hidden_dim=16,
                      attention=False, photo_head="support", support_points=len(sup["unit"]))
    latlon = [torch.from_numpy(a) for a in level_latlon(table)]
    with pytest.raises(ValueError, match="needs its support points"):
        HierLoc(cfg, latlon)
    with pytest.raises(ValueError, match="do not match"):
        HierLoc(cfg, latlon, support=dict(sup, unit=sup["unit"][:-1]))
    with pytest.raises(ValueError, match="photo_head"):
        ModelConfig(feat_dim=16, num_places=(1, 1, 1, 1), photo_head="retrieval")


def test_attention_loss_is_the_mass_on_the_photos_own_places():
    from hierloc.train.geoclip_recipe import attention_loss
    from tests.model.helpers import targets_for

    table = tiny_places()
    sup = _support(table)
    model = _model(table, sup, topk=3)
    idx = torch.tensor([[0, 1, 2]])
    a = torch.tensor([[0.5, 0.3, 0.2]])
    tgt = targets_for(table, [0])
    want = 0.0
    for lv in range(4):
        hit = sup["ancestors"][lv][idx[0]] == tgt[0, lv]
        want -= np.log(max(float(a[0][hit].sum()), 1e-4)) / 4
    assert float(attention_loss(model, (idx, a), tgt)) == pytest.approx(want, rel=1e-5)


def test_support_checkpoint_round_trip_rebuilds_its_support_points_and_refuses_others(tmp_path):
    """Support points are not stored: loading rebuilds them from the table and GeoCLIP's
    wheel (model.support), and a checkpoint trained on other points is refused."""
    import json

    from hierloc.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from hierloc.model.support import support_for_table

    table = tiny_places()
    sup = support_for_table(table)
    assert len(sup["unit"]) > table.level_size(3)  # the cities' own points, then the gallery
    assert torch.equal(sup["ancestors"][3][:table.level_size(3)], torch.arange(table.level_size(3)))
    cfg = ModelConfig(feat_dim=512, num_places=tuple(table.counts().values()), embed_dim=8, hidden_dim=16,
                      dropout=0.0, attention=False, photo_head="support", support_points=len(sup["unit"]),
                      support_topk=32, anchor_space="tangent", extra={"support_hash": sup["hash"]})
    model = HierLoc(cfg, [torch.from_numpy(a) for a in level_latlon(table)], support=sup).eval()
    with torch.no_grad():
        model.support_bias.normal_()
        model.support_population_weight.fill_(0.5)
    save_checkpoint(model, table, tmp_path / "ck")
    loaded, _, _ = load_checkpoint(tmp_path / "ck")
    x = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["model"]["extra"]["support_hash"] = "0" * 64
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="support points"):
        load_checkpoint(tmp_path / "ck")


def test_attention_read_as_a_posterior_sums_the_weights_per_place_and_the_oracle_keeps_the_gallery():
    """eval.geoclip_bench.attention_posterior_decoder (benchmarks/bench_ceiling.py): per level
    the place of largest summed attention, by hand; gallery_only counts gallery points alone."""
    from hierloc import LEVELS
    from hierloc.eval.geoclip_bench import attention_posterior_decoder

    table = tiny_places()
    sup = _support(table, extra=12)
    S, n_city = len(sup["unit"]), table.level_size(3)
    model = _model(table, sup, topk=S).eval()
    with torch.no_grad():
        model.support_bias.copy_(torch.randn(S, generator=torch.Generator().manual_seed(4)))
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(5))
    u = torch.nn.functional.normalize(x, dim=-1)
    logits = 5.0 * u @ sup["unit"].T + model.support_prior().detach()
    for gallery_only in (False, True):
        lg = logits.clone()
        if gallery_only:
            lg[:, :n_city] = float("-inf")
        a = torch.softmax(lg, dim=1)
        dec = attention_posterior_decoder(model, table, gallery_only=gallery_only)(None, x)
        for lv, level in enumerate(LEVELS):
            mass = torch.zeros(6, table.level_size(lv)).index_add_(1, sup["ancestors"][lv], a)
            want = table.key[table.level_slice(lv)][mass.argmax(1).numpy()].astype(str)
            assert list(dec.keys[level]) == list(want)
        if gallery_only:  # only cities some gallery point is filed under can be answered
            allowed = set(table.key[table.level_slice(3)][sup["ancestors"][3][n_city:].numpy()].astype(str))
            assert set(dec.keys["city"]) <= allowed
        city_rows = [table.index(k) for k in dec.keys["city"]]
        assert np.allclose(dec.lat_deg, table.lat_deg[city_rows])


def test_the_prior_kept_between_photos_follows_every_change_of_its_parameters():
    table = tiny_places()
    sup = _support(table)
    model = _model(table, sup, topk=4).eval()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        first = model.support_prior()
        assert model.support_prior() is first  # kept: nothing changed
        before = model.photo_tangent(x)
    for change in (lambda: model.support_bias.add_(torch.linspace(-2, 2, len(sup["unit"]))),
                   lambda: model.support_kind_bias.copy_(torch.tensor([1.5, -1.5])),
                   lambda: model.support_population_weight.fill_(2.0)):
        with torch.no_grad():
            change()
        with torch.inference_mode():
            assert torch.equal(model.support_prior(), model._prior_sum())
    with torch.inference_mode():
        assert not torch.allclose(model.photo_tangent(x), before)
    # training reads the parameters themselves, so the gradient reaches them
    model.train()
    assert model.support_prior().requires_grad


def test_attended_gps_is_the_most_attended_point_inside_each_city():
    table = tiny_places()
    sup = _support(table, extra=6)
    S, n_city = len(sup["unit"]), table.level_size(3)
    sup["latlon"] = torch.stack([torch.linspace(-60, 60, S), torch.linspace(-170, 170, S)], 1).double()
    model = _model(table, sup, topk=4).eval()
    centroid = model.latlon_3.double()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        idx, a = model.support_attention(x)
    city_of = sup["ancestors"][3]
    # per photo: the city of its most attended point, a city holding none of its points
    top_city = city_of[idx[:, 0]]
    empty = torch.tensor([next(c for c in range(n_city) if c not in set(city_of[idx[b]].tolist())) for b in range(3)])
    gps = model.attended_gps((idx, a), torch.stack([top_city, empty, torch.full((3,), -1)], 1))
    for b in range(3):
        inside = [j for j in range(4) if city_of[idx[b, j]] == top_city[b]]
        best = max(inside, key=lambda j: float(a[b, j]))
        assert torch.equal(gps[b, 0], sup["latlon"][idx[b, best]])  # a support point, not the centroid
        assert torch.equal(gps[b, 1], centroid[empty[b]])  # no attended point there: the centroid
    # a model given no coordinates for its points answers with centroids
    bare = _model(table, {k: v for k, v in sup.items() if k != "latlon"}, topk=4).eval()
    assert torch.equal(bare.attended_gps((idx, a), top_city[:, None])[:, 0], centroid[top_city])
    with pytest.raises(ValueError, match="support coordinates"):
        _model(table, dict(sup, latlon=sup["latlon"][:-1]), topk=4)


def test_searches_answer_at_the_attended_point_and_other_heads_at_the_centroid():
    from hierloc.eval.evaluate import answer_gps, predict_features

    table = tiny_places()
    sup = _support(table, extra=30)
    sup["latlon"] = torch.stack([torch.linspace(-60, 60, len(sup["unit"])),
                                 torch.linspace(-170, 170, len(sup["unit"]))], 1).double()
    model = _model(table, sup, topk=8).eval()
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(5))
    best, results = predict_features(model, table, x, beam=3)
    with torch.no_grad():
        attention = model.support_attention(x)
    want = model.attended_gps(attention, torch.as_tensor(best[:, 3:]))[:, 0]
    lat, lon = answer_gps(table, best, results)
    assert np.allclose(lat, want[:, 0].numpy()) and np.allclose(lon, want[:, 1].numpy())
    assert results[0].gps.shape == (6, 3, 2)
    assert (lat != table.lat_deg[best[:, 3] + table.level_slice(3).start]).any()  # not merely centroids
    # a head without support points gives no GPS of its own: the answered city's centroid
    cfg = ModelConfig(feat_dim=16, num_places=tuple(table.counts().values()), embed_dim=8, hidden_dim=16,
                      dropout=0.0, attention=False)
    plain = HierLoc(cfg, [torch.from_numpy(a) for a in level_latlon(table)]).eval()
    best, results = predict_features(plain, table, x)
    rows = best[:, 3] + table.level_slice(3).start
    assert results[0].gps is None
    assert np.array_equal(answer_gps(table, best, results)[0], table.lat_deg[rows])
