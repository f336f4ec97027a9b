import geoopt
import pytest
import torch

from hierloc.manifold import lorentz as L
from hierloc.model.config import ModelConfig
from hierloc.model.hierloc import CrossAttention
from hierloc.train.optim import HybridOptimizer
from tests.model.helpers import targets_for, tiny_model, tiny_places


@pytest.fixture(scope="module")
def table():
    return tiny_places()


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("features", [(), (("image", 16), ("location", 8))])
def test_forward_shapes_and_manifold(table, geometry, attention, features):
    model = tiny_model(table, geometry=geometry, attention=attention, place_features=features)
    feats = torch.randn(5, 16)
    tangents = model.encode_places()
    z = model(feats, tangents)
    pts = model.place_points(tangents)
    extra = 1 if geometry == "lorentz" else 0
    assert z.shape == (5, 16 + extra)
    assert [p.shape for p in pts] == [(n, 16 + extra) for n in model.config.num_places]
    if geometry == "lorentz":
        assert torch.allclose(L.inner(z, z), -torch.ones(5), atol=1e-3)
        assert isinstance(model.anchor_0, geoopt.ManifoldParameter)
    else:
        assert not isinstance(model.anchor_0, geoopt.ManifoldParameter)


def test_learned_curvature_is_clamped_and_trainable(table):
    model = tiny_model(table, learn_curvature=True, curvature=1.0, curvature_range=(0.5, 2.0))
    assert model.log_curvature.requires_grad
    with torch.no_grad():
        model.log_curvature.fill_(10.0)
    assert float(model.curvature.detach()) == 2.0
    z = model(torch.randn(3, 16), model.encode_places())
    assert torch.allclose(L.inner(z, z), -2.0 * torch.ones(3), rtol=1e-3)


def test_attention_matches_the_textbook_formula():
    torch.manual_seed(0)
    a = CrossAttention(16, 4)
    q, k = torch.randn(3, 16), torch.randn(50, 16)
    Q, K, V = a.q(q).view(3, 4, 4), a.k(k).view(50, 4, 4), a.v(k).view(50, 4, 4)
    w = torch.softmax(torch.einsum("bhd,nhd->bhn", Q, K) / 2.0, dim=-1)  # sqrt(head_dim) = 2
    ref = torch.einsum("bhn,nhd->bhd", w, V).reshape(3, 16)
    assert torch.allclose(a(q, k), ref, atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="geometry"):
        ModelConfig(feat_dim=8, num_places=(1, 1, 1, 1), geometry="spherical")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(feat_dim=8, num_places=(1, 1, 1, 1), embed_dim=10, attn_heads=8)
    with pytest.raises(ValueError, match="curvature"):
        ModelConfig(feat_dim=8, num_places=(1, 1, 1, 1), curvature=50.0)
    cfg = ModelConfig(feat_dim=8, num_places=(1, 2, 3, 4), place_features=[["text", 4]])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="does not know"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_a_few_steps_lower_the_loss(table, geometry):
    """Smoke test: AdamW + RiemannianAdam + clipping on tiny synthetic data."""
    torch.manual_seed(0)
    model = tiny_model(table, geometry=geometry, place_features=(("location", 8),))
    opt = HybridOptimizer(model, lr=3e-3)
    if geometry == "lorentz":
        assert opt.num_manifold == 4 and opt.num_euclidean > 0
    n_city = model.config.num_places[3]
    city = torch.arange(n_city).repeat(3)
    # photo features: a fixed random function of the city, plus noise
    proto = torch.randn(n_city, 16)
    feats = proto[city] + 0.1 * torch.randn(len(city), 16)
    targets = targets_for(table, city.numpy())
    latlon = model.place_latlon(3)[city]
    losses = []
    for _ in range(40):
        opt.zero_grad()
        tangents = model.encode_places()
        z = model(feats, tangents)
        loss, per_level = model.loss(z, model.place_points(tangents), targets, latlon)
        loss.backward()
        opt.clip_and_step(1.0)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert set(per_level) == {0, 1, 2, 3}
    if geometry == "lorentz":  # anchors stayed on the manifold under RiemannianAdam
        a = model.anchor_3.detach()
        assert torch.allclose(L.inner(a, a), -torch.ones(len(a)), atol=1e-3)
