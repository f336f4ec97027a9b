"""Views of the atlas: exact positions, north up, the move between two views, the photo
placed by its distribution and its depth in words, and the why-hyperbolic numbers."""

import json

import numpy as np
import pytest

from hierloc.manifold import atlas as A
from hierloc.viz import atlas_view as V


@pytest.fixture(scope="module")
def world():
    from hierloc.geo.places import default_places

    table = default_places()
    return table, A.atlas_for(table)


def _cyclic_order(angles):
    """Indices sorted by angle, rotated to start at the smallest index (a cyclic order)."""
    order = list(np.argsort(np.mod(angles, 2 * np.pi), kind="stable"))
    k = order.index(min(order))
    return order[k:] + order[:k]


def test_france_at_the_centre_with_its_regions_around_it_in_map_order(world):
    table, atlas = world
    fr = table.index("FR")
    view = V.focus_view(atlas, table, fr)
    P = view["points"]
    i = P["key"].index("FR")
    assert P["role"][i] == "focus" and (P["x"][i], P["y"][i]) == (0.0, 0.0)
    kids = [k for k, r in zip(P["key"], P["role"]) if r == "child"]
    assert sorted(kids) == sorted(table.key[table.children(fr)]) and len(kids) == 22
    idx = [P["key"].index(k) for k in kids]
    drawn = np.arctan2([P["y"][j] for j in idx], [P["x"][j] for j in idx])
    rows = [table.index(k) for k in kids]
    bearing = A.geo_bearing(table.lat_deg[fr], table.lon_deg[fr], table.lat_deg[rows], table.lon_deg[rows])
    assert _cyclic_order(drawn) == _cyclic_order(bearing)
    # exact distances, and the Poincare radius is exactly tanh(d / 2)
    d = np.array([P["d"][j] for j in idx])
    assert np.allclose(d, atlas.dist(np.full(len(rows), fr), rows), atol=1e-4)
    r = np.hypot([P["x"][j] for j in idx], [P["y"][j] for j in idx])
    assert np.allclose(r, np.tanh(d / 2), atol=2e-5)
    # north up: Nord-Pas-de-Calais is drawn above Provence
    npc, paca = (P["key"].index(table.key[table.get(k)]) for k in ("Nord-Pas-de-Calais_FR", "Provence-Alpes-Cote d'Azur_FR"))
    assert P["y"][npc] > P["y"][paca]
    # every drawn place's parent is drawn, or marked -1; the Earth is point 0
    assert P["key"][0] == V.EARTH_KEY and P["parent"][i] == 0
    assert len(json.dumps(view)) < 60_000


def _mobius(z, a, rot):
    return np.exp(1j * rot) * (z - a) / (1 - np.conj(a) * z)


def test_the_move_between_two_views_is_the_isometry_the_page_animates(world):
    """The page moves the old view's points by e^{i rot}(z - a)/(1 - conj(a) z) and then
    shows the new view: the two must agree on every place they share."""
    table, atlas = world
    earth = V.focus_view(atlas, table, -1)
    fr = V.focus_view(atlas, table, table.index("FR"), prev=earth["state"])
    assert fr["move"]["from"] == "earth" and abs(complex(*fr["move"]["a"])) > 0.99  # France was near the rim
    region = table.get("Ile-de-France_FR")
    idf = V.focus_view(atlas, table, region, prev=fr["state"])
    move = idf["move"]
    a = complex(*move["a"])
    Pf, Pi = fr["points"], idf["points"]
    checked = 0
    for k in set(Pf["key"]) & set(Pi["key"]):
        zf = complex(Pf["x"][Pf["key"].index(k)], Pf["y"][Pf["key"].index(k)])
        zi = complex(Pi["x"][Pi["key"].index(k)], Pi["y"][Pi["key"].index(k)])
        if abs(zf) < 0.99 and abs(zi) < 0.99:  # rounding to 6 digits matters only at the rim
            assert abs(_mobius(zf, a, move["rot"]) - zi) < 1e-4, k
            checked += 1
    assert checked >= 5
    z = complex(Pf["x"][Pf["key"].index(table.key[region])], Pf["y"][Pf["key"].index(table.key[region])])
    assert abs(_mobius(z, a, move["rot"])) < 1e-5  # the clicked region lands on the centre


def _two_cities(table, atlas):
    sub = table.level_slice(2)
    for s in range(sub.start, sub.stop):
        kids = table.children(s)
        if 6 <= len(kids) <= 30:
            return s, int(kids[np.argmin(atlas.phi[kids])]), int(kids[np.argmax(atlas.phi[kids])])
    raise AssertionError


def test_the_photo_and_its_depth_in_words(world):
    table, atlas = world
    s, a, b = _two_cities(table, atlas)
    path = table.ancestors(a)
    sure = V.place_photo(atlas, table, path, [a], [1.0])
    assert sure.depth == 3 and sure.text.startswith("Sure down to the city") and "100%" in sure.text
    assert float(atlas.dist_point(sure.point, a)) < 0.5
    split = V.place_photo(atlas, table, path, [a, b], [0.5, 0.5])
    assert split.depth == 2 and split.text.startswith("Sure down to the sub-region")
    assert float(atlas.dist_point(split.point, s)) < min(float(atlas.dist_point(split.point, c)) for c in (a, b))
    likely = V.place_photo(atlas, table, path, [a, b], [0.7, 0.3])
    assert likely.depth == 3 and likely.text.startswith("Likely down to the city") and "(70%)" in likely.text
    fr, jp = table.index("FR"), table.index("JP")
    c_fr = int(table.level_slice(3).start + np.flatnonzero(table.country_code[table.level_slice(3)] == "FR")[0])
    c_jp = int(table.level_slice(3).start + np.flatnonzero(table.country_code[table.level_slice(3)] == "JP")[0])
    torn = V.place_photo(atlas, table, table.ancestors(c_fr), [c_fr, c_jp], [0.5, 0.5])
    assert torn.depth == -1 and torn.text.startswith("Not sure even of the country")
    assert torn.point.rho < min(float(atlas.dist_point(torn.point, r)) for r in (fr, jp))
    beams = V.place_photo(atlas, table, path, [a, b], [0.6, 0.4], basis=V.BEAM_BASIS)
    assert "final beam-search paths" in beams.text
    # the decoder's own probabilities of the path (over every city, as the header shows them) win
    # over those of the few cities kept for the point; nonsense ones are not read
    given = V.place_photo(atlas, table, path, [a, b], [0.7, 0.3], masses=[0.93, 0.81, 0.62, 0.4])
    assert given.depth == 2 and given.text.startswith("Likely down to the sub-region") and "(62%)" in given.text
    assert np.allclose(given.point.inc, likely.point.inc) and given.point.rho == likely.point.rho
    for bad in ([0.9, 0.95, 0.5, 0.2], [0.9, float("nan"), 0.5, 0.2], [0.9, 0.8, 0.5], "0.9", [1.5, 1, 1, 1]):
        assert V.place_photo(atlas, table, path, [a, b], [0.7, 0.3], masses=bad).masses == likely.masses


def test_keep_cities_sums_repeats_and_truncates():
    rows, w = V.keep_cities([5, 7, 5, 9, 11], [0.2, 0.5, 0.2, 1e-6, 0.0])
    assert list(rows) == [7, 5] and np.allclose(w, [5 / 9, 4 / 9])
    with pytest.raises(ValueError):
        V.keep_cities([1, 2], [0.0, np.nan])


def test_the_page_cannot_place_the_photo(world):
    """What comes back from the page is checked: bad keys, weights or paths give no photo,
    and the point is always recomputed from the cities."""
    table, atlas = world
    s, a, b = _two_cities(table, atlas)
    good = {"cities": [[table.key[a], 0.6], [table.key[b], 0.4]], "path": [table.key[r] for r in table.ancestors(a)]}
    p = V.photo_from_dict(atlas, table, good)
    assert p is not None and p.depth == 3
    said = V.photo_from_dict(atlas, table, {**good, "masses": [0.9, 0.8, 0.45, 0.3], "point": {"anchor": 0, "rho": 0.0}})
    assert said.depth == 1 and said.masses[2] == 0.45 and said.point.rho == p.point.rho  # the point is recomputed
    for bad in (None, "x", {"cities": [["nope", 1.0]], "path": good["path"]},
                {"cities": [[table.key[a], -1.0]], "path": good["path"]},
                {"cities": good["cities"], "path": good["path"][:2]},
                {"cities": [[table.key[s], 1.0]], "path": good["path"]}):  # a sub-region is not a city
        assert V.photo_from_dict(atlas, table, bad) is None


def test_why_hyperbolic_numbers(world):
    table, atlas = world
    nums = V.teaching_numbers(atlas, table, table.index("FR"))
    assert nums["within"] == sorted(nums["within"]) and nums["within"][-1] == len(table)
    assert nums["flat_overlaps"] > 10 * max(nums["hyperbolic_overlaps"], 1)
    assert nums["flat_distortion"] > 2 * nums["hyperbolic_distortion"]
    text = V.teaching_text(nums)
    assert "Room grows exponentially" in text and "flat plane" in text
    earth = V.teaching_numbers(atlas, table, -1)
    assert earth["focus"] == "the Earth" and earth["subtree"] > 246


def test_caption_says_where_the_parent_is(world):
    table, atlas = world
    text = V.focus_caption(atlas, table, table.index("FR"))
    assert "France (country) at the centre" in text and "to the north" in text and "22 regions" in text
    assert "246 countries" in V.focus_caption(atlas, table, -1)
