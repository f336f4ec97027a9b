"""The atlas: its formulas against 60-digit arithmetic, its tree properties on the whole
shipped hierarchy, its export rechecked independently, and the photo's centroid."""

import mpmath as mp
import numpy as np
import pytest

from hierloc.eval.atlas_stats import atlas_stats, nearest
from hierloc.manifold import atlas as A
from tests.model.helpers import tiny_places

mp.mp.dps = 60


# ---- independent reference: 3x3 Lorentz matrices in 60 digits ---------------------------
def _rot(a):
    c, s = mp.cos(a), mp.sin(a)
    return mp.matrix([[1, 0, 0], [0, c, -s], [0, s, c]])


def _boost(t):
    c, s = mp.cosh(t), mp.sinh(t)
    return mp.matrix([[c, s, 0], [s, c, 0], [0, 0, 1]])


def _frame(table, tau, phi, row):
    """The place's frame in the Earth's, composed down its path from the export's numbers
    only: each place is R(phi) B(tau) in its parent's frame."""
    m = mp.eye(3)
    for r in table.ancestors(int(row)):
        m = m * _rot(mp.mpf(float(phi[r]))) * _boost(mp.mpf(float(tau[r])))
    return m


def _origin(m):
    return m * mp.matrix([1, 0, 0])


def _mp_dist(x, y):
    return mp.acosh(x[0] * y[0] - x[1] * y[1] - x[2] * y[2])


@pytest.fixture(scope="module")
def shipped():
    from hierloc.geo.places import default_places

    table = default_places()
    return table, A.build_atlas(table)


# ---- the formulas -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_step_and_distances_agree_with_60_digits_even_far_out(seed):
    """A chain of steps to radius 30+ (past where float64 coordinates, about e^r, lose
    nearby distances): rho, the angle and the distance between two siblings stay exact
    to float64 rounding."""
    rng = np.random.default_rng(seed)
    taus = rng.uniform(4.0, 6.0, 9)
    phis = rng.uniform(-0.6 * np.pi, 0.6 * np.pi, 9)
    rho, omega, inc = 0.0, 0.0, []
    m = mp.eye(3)
    for i, (t, p) in enumerate(zip(taus, phis)):
        parent_rho, parent_omega, parent_m = rho, omega, m
        m = m * _rot(mp.mpf(float(p))) * _boost(mp.mpf(float(t)))
        if i == 0:
            rho, delta, omega = float(t), float(p), 0.0
        else:
            rho, delta, omega = (float(v) for v in A.step(rho, t, omega + p))
        inc.append(delta)
        x = _origin(m)
        assert rho == pytest.approx(float(mp.acosh(x[0])), rel=1e-13)
        assert A.wrap(sum(inc)) == pytest.approx(float(mp.atan2(x[2], x[1])), abs=1e-12)
    assert rho > 25
    # a sibling of the last point: same parent, same distance, 0.01 rad further round
    sib = _origin(parent_m * _rot(mp.mpf(float(phis[-1]) + 0.01)) * _boost(mp.mpf(float(taus[-1]))))
    r_sib, d_sib, _ = A.step(parent_rho, taus[-1], parent_omega + phis[-1] + 0.01)
    dtheta = float(delta) - float(d_sib)  # the shared slots cancel exactly
    d = A.dist_from_sinh2_half(A.pair_sinh2_half(rho, float(r_sib), dtheta))
    assert float(d) == pytest.approx(float(_mp_dist(_origin(m), sib)), rel=1e-10)


def test_seen_from_is_the_isometry_that_recentres():
    rng = np.random.default_rng(0)
    a, r, dth = 20.0, rng.uniform(18, 23, 50), rng.normal(0, 1e-7, 50)
    d, ang = A.seen_from(a, r, dth)
    # distances from the focus match the law of cosines written without cancellation
    assert np.allclose(d, A.dist_from_sinh2_half(A.pair_sinh2_half(a, r, dth)), rtol=1e-12)
    # the origin seen from the focus lies straight back (angle pi), at distance a
    d0, a0 = A.seen_from(a, np.array([0.0]), np.array([0.0]))
    assert d0[0] == pytest.approx(a) and abs(abs(a0[0]) - np.pi) < 1e-12


def test_tau_for_fan_gives_the_half_angle_it_promises():
    beta, psi = np.array([0.01, 0.1, 0.5]), 0.7 * np.pi
    t = A.tau_for_fan(beta, psi)
    th = np.tanh(t)
    seen = np.arccos((np.cos(beta) - th) / (1 - th * np.cos(beta)))  # aberration of the wedge's sides
    assert np.allclose(seen, psi)
    assert A.tau_for_fan(np.array([3.0]), psi)[0] == 0.0  # a wedge wider than the fan needs no distance


# ---- the atlas of the shipped hierarchy ---------------------------------------------------
def test_the_shipped_atlas_is_a_tree(shipped):
    """What `atlas stats` measures, on every place: the issue's bars and better."""
    table, atlas = shipped
    s = atlas_stats(atlas, table, triples=5000)
    assert s["farther_than_parent"]["all"] == 1.0
    assert s["nearest_up_is_parent"]["all"] >= 0.99
    assert s["nearest_same_level_is_sibling"]["all"] >= 0.97
    assert min(s["sibling_order"].values()) >= 0.90
    assert all(s["max_radius"][a] < s["max_radius"][b] for a, b in zip(("country", "region", "sub-region"),
                                                                         ("region", "sub-region", "city")))
    assert s["places"] == 164985 and len(atlas) == len(table)
    # the numbers the app's About text quotes are these
    import json

    from hierloc.paths import ASSETS_DIR

    shipped_stats = json.loads((ASSETS_DIR / "places" / "atlas_stats.json").read_text())
    assert shipped_stats["table_hash"] == table.content_hash()
    assert shipped_stats["config"] == json.loads(json.dumps(atlas.meta()["config"]))
    for key in ("farther_than_parent", "nearest_up_is_parent", "nearest_same_level_is_sibling", "max_radius"):
        assert shipped_stats[key] == s[key], key


def test_nearest_is_exact_against_brute_force(shipped):
    table, atlas = shipped
    rng = np.random.default_rng(3)
    city, sub = table.level_slice(3), table.level_slice(2)
    q = rng.choice(np.arange(city.start, city.stop), 200, replace=False)
    cand = np.arange(sub.start, sub.stop)
    brute = cand[A.pair_sinh2_half(atlas.rho[q, None], atlas.rho[None, cand],
                                   A.angle_diff(atlas.inc[q, None, :], atlas.inc[None, cand, :])).argmin(1)]
    fast = nearest(atlas, q, cand, atlas.tau[q] * (1 + 1e-12) + 1e-12)
    assert np.array_equal(fast, brute)


def test_deterministic_and_cached(shipped):
    table, atlas = shipped
    again = A.build_atlas(table)
    for name in ("tau", "phi", "rho", "omega", "inc"):
        assert np.array_equal(getattr(atlas, name), getattr(again, name))
    assert A.atlas_for(table) is A.atlas_for(table)


def test_export_is_rechecked_independently(shipped, tmp_path):
    """Write the export, read it back, and rebuild places from (tau, phi) alone with
    60-digit Lorentz matrices: every distance the atlas reports is the true one."""
    import pandas as pd

    from hierloc.cli import main

    table, atlas = shipped
    out = tmp_path / "atlas.csv"
    assert main(["atlas", "export", "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["key", "level", "parent", "tau", "phi"] and len(df) == len(table)
    assert (df["parent"] == "").sum() == table.level_size(0)
    tau, phi = df["tau"].to_numpy(float), df["phi"].to_numpy(float)
    assert np.array_equal(tau, atlas.tau) and np.array_equal(phi, atlas.phi)  # 17 digits round-trip
    rng = np.random.default_rng(0)
    city = table.level_slice(3)
    rows = rng.choice(np.arange(city.start, city.stop), 12, replace=False)
    for r in rows:
        x = _origin(_frame(table, tau, phi, r))
        assert float(mp.acosh(x[0])) == pytest.approx(atlas.rho[r], rel=1e-12)
        p = int(table.parent[r])
        assert float(_mp_dist(x, _origin(_frame(table, tau, phi, p)))) == pytest.approx(atlas.dist(r, p), rel=1e-10)
        sibs = table.children(p)
        for s in sibs[sibs != r][:2]:
            ref = float(_mp_dist(x, _origin(_frame(table, tau, phi, s))))
            assert ref == pytest.approx(float(atlas.dist(r, s)), rel=1e-9)
        other = int(rows[0]) if r != rows[0] else int(rows[1])
        ref = float(_mp_dist(x, _origin(_frame(table, tau, phi, other))))
        assert ref == pytest.approx(float(atlas.dist(r, other)), rel=1e-10)
    rebuilt = A.atlas_from_export(table, df)
    assert np.allclose(rebuilt.rho, atlas.rho, rtol=1e-14) and np.allclose(rebuilt.inc, atlas.inc, atol=1e-14)


def test_views_are_exact_where_global_coordinates_would_not_be(shipped):
    """Seen from a deep city, its siblings' distances are the atlas's own, and their
    positions on the disk are the exact Poincare coordinates of those distances."""
    table, atlas = shipped
    city = table.level_slice(3)
    deep = int(city.start + np.argmax(atlas.rho[city]))
    sibs = table.children(int(table.parent[deep]))
    d, ang = atlas.view(deep, sibs)
    assert np.allclose(d, atlas.dist(np.full(len(sibs), deep), sibs), rtol=1e-12, atol=1e-12)
    assert d[list(sibs).index(deep)] == 0.0
    xy = A.poincare(d, ang)
    assert np.allclose(2 * np.arctanh(np.linalg.norm(xy, axis=1)), d, atol=1e-9)


def test_tiny_hierarchy_atlas():
    table = tiny_places()
    atlas = A.build_atlas(table)
    s = atlas_stats(atlas, table, triples=500)
    assert s["farther_than_parent"]["all"] == 1.0 and s["nearest_up_is_parent"]["all"] == 1.0
    assert s["sibling_order"]["city"] == 1.0


# ---- the photo's centroid ---------------------------------------------------------------
def _fan_ends(table, atlas):
    """A sub-region with several cities and the two cities at the ends of its fan."""
    sub = table.level_slice(2)
    for s in range(sub.start, sub.stop):
        kids = table.children(s)
        if 6 <= len(kids) <= 40:
            phi = atlas.phi[kids]
            return s, int(kids[np.argmin(phi)]), int(kids[np.argmax(phi)])
    raise AssertionError("no sub-region with 6-40 cities")


@pytest.mark.parametrize("kind", ["median", "frechet", "lorentz"])
def test_all_mass_on_one_city_puts_the_photo_there(shipped, kind):
    table, atlas = shipped
    city = table.level_slice(3).start + 1234
    p = A.centroid(atlas, [city], [1.0], kind)
    assert float(atlas.dist_point(p, city)) < 0.5
    # a scrap elsewhere in the sub-region does not move the median off the city
    _, a, b = _fan_ends(table, atlas)
    q = A.centroid(atlas, [a, b], [0.9, 0.1], "median")
    assert float(atlas.dist_point(q, a)) < 0.5


@pytest.mark.parametrize("kind", ["median", "frechet", "lorentz"])
def test_two_cities_at_the_ends_of_a_fan_put_the_photo_by_their_sub_region(shipped, kind):
    table, atlas = shipped
    s, a, b = _fan_ends(table, atlas)
    p = A.centroid(atlas, [a, b], [0.5, 0.5], kind)
    d_s, d_a, d_b = (float(atlas.dist_point(p, r)) for r in (s, a, b))
    assert d_s < d_a and d_s < d_b


@pytest.mark.parametrize("kind", ["median", "frechet", "lorentz"])
@pytest.mark.parametrize("other", ["JP", "DE", "BR"])
def test_two_countries_pull_the_photo_toward_the_earth(shipped, kind, other):
    """Far apart or neighbours: a photo torn between a city of France and one of another
    country sits nearer the Earth's point than either country."""
    table, atlas = shipped
    fr, xx = table.index("FR"), table.index(other)
    a, b = (int(table.children(int(table.children(int(table.children(c)[0]))[0]))[0]) for c in (fr, xx))
    p = A.centroid(atlas, [a, b], [0.5, 0.5], kind)
    assert p.rho < float(atlas.dist_point(p, fr)) and p.rho < float(atlas.dist_point(p, xx))


def test_centroid_ignores_zero_weights_and_refuses_none(shipped):
    table, atlas = shipped
    c = table.level_slice(3).start
    p = A.centroid(atlas, [c, c + 1], [1.0, 0.0])
    assert float(atlas.dist_point(p, c)) < 1e-9
    with pytest.raises(ValueError):
        A.centroid(atlas, [c], [0.0])
