"""Property tests over seeds x {float32, float64} and a few curvatures."""

import geoopt
import pytest
import torch

from hierloc.manifold import lorentz as L

SEEDS = [0, 1, 2]
DTYPES = [torch.float32, torch.float64]
CURVATURES = [0.5, 1.0, 2.0]
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def points(seed, dtype, K, n=64, d=16, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    return L.exp0(v, K).to(dtype), v.to(dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", CURVATURES)
def test_exp_log_round_trip_and_on_manifold(seed, dtype, K):
    g = torch.Generator().manual_seed(seed)
    v = (torch.randn(64, 16, generator=g) * 1.5).to(dtype)
    x = L.exp0(v, K)
    assert torch.allclose(L.inner(x, x), torch.full((64,), -K, dtype=dtype), rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10 * x[:, 0].max().item() ** 2)
    assert torch.all(x[:, 0] > 0)
    assert torch.allclose(L.log0(x, K), v, atol=TOL[dtype] * 10, rtol=TOL[dtype] * 10)
    assert torch.allclose(L.dist0(x, K), v.norm(dim=-1), atol=TOL[dtype] * 10, rtol=TOL[dtype] * 10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", CURVATURES)
def test_distance_axioms(seed, dtype, K):
    x, _ = points(seed, dtype, K)
    y, _ = points(seed + 100, dtype, K)
    z, _ = points(seed + 200, dtype, K)
    assert torch.all(L.dist(x, x, K) < 1e-6)
    assert torch.allclose(L.dist(x, y, K), L.dist(y, x, K), atol=TOL[dtype])
    slack = 1e-3 if dtype == torch.float32 else 1e-9
    assert torch.all(L.dist(x, z, K) <= L.dist(x, y, K) + L.dist(y, z, K) + slack)
    # the matrix form agrees with the element-wise form
    m = L.dist_matrix(x, y, K)
    assert torch.allclose(torch.diagonal(m), L.dist(x, y, K), rtol=1e-4 if dtype == torch.float32 else 1e-8)
    # The one-matmul form cancels x_0 y_0 against x_s.y_s: its error at d = 0 grows
    # like x_0 sqrt(eps). The element-wise form is exact there.
    eps = torch.finfo(dtype).eps
    assert torch.all(torch.diagonal(L.dist_matrix(x, x, K)) <= 4 * x[:, 0] * eps ** 0.5 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", CURVATURES)
def test_agrees_with_geoopt(dtype, K):
    lorentz, ball = L.geoopt_manifolds(K)
    x, v = points(0, dtype, K)
    y, _ = points(1, dtype, K)
    o = L.origin(16, K, dtype)
    rtol = 1e-4 if dtype == torch.float32 else 1e-6  # geoopt rounds differently (~5e-8)
    assert torch.allclose(L.exp0(v, K), lorentz.expmap0(torch.cat([torch.zeros(64, 1, dtype=dtype), v], -1)), rtol=rtol)
    assert torch.allclose(L.dist(x, y, K), lorentz.dist(x, y), rtol=rtol)
    assert torch.allclose(o, lorentz.origin(17, dtype=dtype))
    # the Poincare images are in geoopt's ball and distances are preserved (points
    # away from the rim: geoopt pulls points within 1e-5 of it inwards)
    x, _ = points(0, dtype, K, scale=0.5)
    y, _ = points(1, dtype, K, scale=0.5)
    p, q = L.to_poincare(x, K), L.to_poincare(y, K)
    assert torch.all(p.norm(dim=-1) < K ** 0.5)
    prtol = 1e-3 if dtype == torch.float32 else 1e-6  # near the rim the ball loses digits
    assert torch.allclose(ball.dist(p, q), L.dist(x, y, K), rtol=prtol)
    assert torch.allclose(L.poincare_dist(p, q, K), L.dist(x, y, K), rtol=prtol)
    assert isinstance(lorentz, geoopt.Lorentz) and float(lorentz.k) == K
    assert float(ball.c) == pytest.approx(1.0 / K)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", CURVATURES)
def test_lorentz_poincare_round_trip(seed, dtype, K):
    x, _ = points(seed, dtype, K, scale=0.7)
    back = L.from_poincare(L.to_poincare(x, K), K)
    assert torch.allclose(back, x, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [1e-15, 1e-10, 1e-6, 1e-3, 1.0, 5.0, 20.0])
def test_gradients_finite_across_tangent_norms(dtype, norm):
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(8, 16, generator=g, dtype=dtype)
    v = (direction / direction.norm(dim=-1, keepdim=True) * norm).requires_grad_(True)
    y = L.exp0(torch.randn(8, 16, generator=g, dtype=dtype) * 0.5)
    x = L.exp0(v)
    loss = L.dist(x, y).sum() + L.sq_dist_matrix(x, y).sum() + L.log0(x).sum() + L.to_poincare(x).sum()
    loss.backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_finite_at_coincident_points(dtype):
    v = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    x = L.exp0(v)
    (L.dist(x, x.detach()).sum() + L.sq_dist_matrix(x, x.detach()).sum()).backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_agrees_with_float64(seed):
    x64, v64 = points(seed, torch.float64, 1.0, scale=1.5)
    y64, _ = points(seed + 7, torch.float64, 1.0, scale=1.5)
    d64 = L.dist_matrix(x64, y64)
    d32 = L.dist_matrix(L.exp0(v64.float()), y64.float())
    assert torch.allclose(d32.double(), d64, rtol=1e-4, atol=1e-3)
    assert torch.allclose(L.exp0(v64.float()).double(), x64, rtol=1e-5, atol=1e-5)
