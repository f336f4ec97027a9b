import numpy as np
import pytest
import torch

from hierloc.geo.distance import haversine_km, haversine_matrix_km

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def test_paris_london_golden():
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.56, abs=0.01)


def test_same_point_is_zero():
    assert haversine_km(*PARIS, *PARIS) == 0.0


def test_antipodes_half_circumference():
    assert haversine_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(np.pi * 6371.0, abs=1e-3)  # float64 rounding: < 1 m
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20015.09, abs=0.01)


def test_nearly_antipodal_no_nan_numpy_and_torch():
    lat = np.array([0.0, 45.0, -89.9999999])
    lon = np.array([0.0, 10.0, 0.0])
    d = haversine_km(lat, lon, -lat + 1e-12, lon + 180.0 - 1e-12)
    assert np.all(np.isfinite(d)) and np.all(d > 20015.0)
    t = torch.tensor(lat, requires_grad=True)
    dt = haversine_km(t, torch.tensor(lon), -t.detach() + 1e-12, torch.tensor(lon) + 180.0)
    dt.sum().backward()
    assert torch.isfinite(dt).all()


def test_numpy_and_torch_agree_and_broadcast():
    rng = np.random.default_rng(0)
    a = rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)
    b = rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)
    d_np = haversine_km(*a, *b)
    d_t = haversine_km(*(torch.tensor(x) for x in (*a, *b)))
    assert np.allclose(d_np, d_t.numpy(), rtol=1e-12)
    m = haversine_matrix_km(*(np.asarray(x) for x in (*a, *b)))
    assert m.shape == (50, 50)
    assert np.allclose(np.diag(m), d_np)
