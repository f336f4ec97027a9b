import math

import pytest
import torch
import torch.nn.functional as F

from hierloc.losses import GeoWeightedLoss
from hierloc.model.geometry import Geometry


def _setup(seed=0, B=5, N=40, d=8):
    g = torch.Generator().manual_seed(seed)
    geom = Geometry("lorentz", 1.0)
    z = geom.to_point(torch.randn(B, d, generator=g, dtype=torch.float64))
    h = geom.to_point(torch.randn(N, d, generator=g, dtype=torch.float64))
    target = torch.randint(0, N, (B,), generator=g)
    photo_ll = torch.stack([torch.rand(B, generator=g, dtype=torch.float64) * 140 - 70,
                            torch.rand(B, generator=g, dtype=torch.float64) * 360 - 180], 1)
    place_ll = torch.stack([torch.rand(N, generator=g, dtype=torch.float64) * 140 - 70,
                            torch.rand(N, generator=g, dtype=torch.float64) * 360 - 180], 1)
    return geom, z, h, target, photo_ll, place_ll


@pytest.mark.parametrize("kernel", ["laplace", "gaussian", "none"])
def test_lambda_zero_is_plain_infonce_on_squared_distances(kernel):
    geom, z, h, target, pll, hll = _setup()
    loss = GeoWeightedLoss(kernel=kernel, tau_init=0.7, lambda_init=0.0, chunk=7).double()
    got = loss.level_loss(geom, z, h, target, pll, hll)
    ref = F.cross_entropy(-geom.sq_dist_matrix(z, h) / 0.7, target, reduction="none")
    assert torch.allclose(got, ref, rtol=1e-7)  # matrix vs difference form of d^2


def test_geo_weighted_matches_the_formula_and_chunking_does_not_matter():
    geom, z, h, target, pll, hll = _setup(1)
    from hierloc.geo.distance import haversine_km

    a = GeoWeightedLoss(tau_init=0.3, lambda_init=2.0, sigma_init_km=500.0, chunk=6).double()
    b = GeoWeightedLoss(tau_init=0.3, lambda_init=2.0, sigma_init_km=500.0, chunk=10_000).double()
    got = a.level_loss(geom, z, h, target, pll, hll)
    assert torch.allclose(got, b.level_loss(geom, z, h, target, pll, hll), rtol=1e-9)
    d = geom.sq_dist_matrix(z, h)
    g = haversine_km(pll[:, None, 0], pll[:, None, 1], hll[None, :, 0], hll[None, :, 1])
    w = 1 + 2.0 * torch.exp(-g / 500.0)
    e = torch.exp(-d / 0.3)
    pos = e.gather(1, target[:, None]).squeeze(1)
    neg = (w * e).sum(1) - (w * e).gather(1, target[:, None]).squeeze(1)
    assert torch.allclose(got, -torch.log(pos / (pos + neg)), rtol=1e-6)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_nearer_negative_weighs_more(kernel):
    loss = GeoWeightedLoss(kernel=kernel, lambda_init=1.5, sigma_init_km=300.0)
    w = loss.weights(torch.tensor([10.0, 300.0, 3000.0]))
    assert w[0] > w[1] > w[2] >= 1.0
    assert float(w[0].detach()) == pytest.approx(1 + 1.5 * (math.exp(-10 / 300) if kernel == "laplace" else math.exp(-(10 / 300) ** 2)), rel=1e-5)
    # and it raises the loss when a wrong place near the photo is as close in the space
    geom = Geometry("lorentz", 1.0)
    z = geom.to_point(torch.zeros(1, 4))
    h = geom.to_point(torch.tensor([[0.1, 0, 0, 0], [0, 0.1, 0, 0]]))
    near = loss.level_loss(geom, z, h, torch.tensor([0]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.1]]))
    far = loss.level_loss(geom, z, h, torch.tensor([0]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0], [40.0, 100.0]]))
    assert near > far


def test_gradients_reach_tau_lambda_sigma():
    geom, z, h, target, pll, hll = _setup(2)
    loss = GeoWeightedLoss(tau_init=0.5, lambda_init=1.0, sigma_init_km=2000.0, chunk=9).double()
    z = z.clone().requires_grad_(True)
    loss.level_loss(geom, z, h, target, pll, hll).mean().backward()
    for p in (loss.log_tau, loss.log_lambda, loss.log_sigma):
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert torch.isfinite(z.grad).all()


def test_no_nan_for_coincident_points():
    geom = Geometry("lorentz", 1.0)
    v = torch.randn(3, 8, requires_grad=True)
    z = geom.to_point(v)
    h = torch.cat([z.detach(), z.detach()[:1]], 0)  # the positive and a negative coincide with z
    loss = GeoWeightedLoss(chunk=2)
    ll = torch.zeros(3, 2)
    out = loss.level_loss(geom, z, h, torch.tensor([0, 1, 2]), ll, torch.zeros(4, 2)).sum()
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(v.grad).all()


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        GeoWeightedLoss(kernel="cosine")
    with pytest.raises(ValueError):
        GeoWeightedLoss(tau_init=0.0)


def test_chord_distance_equals_haversine():
    from hierloc.geo.distance import haversine_matrix_km
    from hierloc.losses import _unit_xyz, chord_km

    g = torch.Generator().manual_seed(5)
    a = torch.stack([torch.rand(20, generator=g, dtype=torch.float64) * 180 - 90,
                     torch.rand(20, generator=g, dtype=torch.float64) * 360 - 180], 1)
    b = torch.cat([a[:3], a[3:8] + 1e-3, -a[8:]], 0)  # same, near, antipodal points
    ref = haversine_matrix_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    assert torch.allclose(chord_km(_unit_xyz(a), _unit_xyz(b)), ref, atol=1e-3)
