"""Beam search on a small hand-built hierarchy where the right answer is known."""

import pandas as pd
import pytest
import torch

from hierloc.geo.build import table_from_points
from hierloc.infer.beam import Hierarchy, beam_search, flat_search
from hierloc.model.geometry import Geometry

# Two countries A and B. The photo lies nearer to A's point than to B's, but its
# nearest city (B1a) belongs to B.
POS = {  # key -> 2-D position (Euclidean; mapped to the hyperboloid by exp_0 for Lorentz)
    "A": (0.0, 0.0), "B": (3.0, 0.0),
    "RA1_A": (0.0, 0.5), "RA2_A": (0.0, -0.5), "RB1_B": (2.5, 0.0), "RB2_B": (3.0, 1.0),
    "SA1_RA1_A": (0.0, 0.5), "SA2_RA2_A": (0.0, -0.5), "SB1_RB1_B": (2.5, 0.0), "SB2_RB2_B": (3.0, 1.0),
    "A1a_SA1_RA1_A": (-1.0, 0.0), "A1b_SA1_RA1_A": (-1.0, 1.0),
    "A2a_SA2_RA2_A": (-1.0, -1.0), "A2b_SA2_RA2_A": (-0.5, -1.5),
    "B1a_SB1_RB1_B": (1.5, 0.0), "B1b_SB1_RB1_B": (2.5, 0.5),
    "B2a_SB2_RB2_B": (3.5, 1.5), "B2b_SB2_RB2_B": (3.0, 2.0),
}
PHOTO = (1.4, 0.0)


@pytest.fixture(scope="module")
def tree_and_points():
    rows = []
    for key in POS:
        parts = key.split("_")
        if len(parts) == 4:
            rows.append((parts[3], parts[2], parts[1], parts[0], 0.0, 0.0))
    table = table_from_points(pd.DataFrame(rows, columns=["cc", "admin1", "admin2", "city", "lat_deg", "lon_deg"]), "hand")
    tree = Hierarchy.from_table(table)
    tangents = []
    for lv in range(4):
        sl = table.level_slice(lv)
        tangents.append(torch.tensor([POS[k] for k in table.key[sl]], dtype=torch.float64))
    return table, tree, tangents


def _answer(table, res):
    sl = table.level_slice(3)
    return table.key[sl][int(res.best[0, 3])]


@pytest.mark.parametrize("kind", ["euclidean", "lorentz"])
def test_greedy_goes_wrong_and_a_wider_beam_recovers(tree_and_points, kind):
    table, tree, tangents = tree_and_points
    geom = Geometry(kind, 1.0)
    pts = [geom.to_point(t) for t in tangents]
    z = geom.to_point(torch.tensor([PHOTO], dtype=torch.float64))
    assert _answer(table, beam_search(geom, z, pts, tree, beam=1)).endswith("_A")
    res = beam_search(geom, z, pts, tree, beam=2)
    assert _answer(table, res) == "B1a_SB1_RB1_B"
    flat = flat_search(geom, z, pts, tree, k=3)
    assert _answer(table, flat) == "B1a_SB1_RB1_B"
    # the path is consistent with the tree
    best = res.best[0]
    for lv in range(1, 4):
        assert int(tree.parents[lv][best[lv]]) == int(best[lv - 1])
    assert torch.equal(flat.best[0], best)


def test_result_fields(tree_and_points):
    table, tree, tangents = tree_and_points
    geom = Geometry("lorentz", 1.0)
    pts = [geom.to_point(t) for t in tangents]
    z = geom.to_point(torch.tensor([PHOTO, (-1.0, 0.9)], dtype=torch.float64))
    res = beam_search(geom, z, pts, tree, beam=10, tau=0.5)
    assert res.paths.shape == (2, 10, 4) and res.score.shape == (2, 10)
    # 8 cities exist: two paths are padding
    assert int((res.paths[:, :, 3] >= 0).sum(1).min()) == 8
    valid = res.score[0] > -float("inf")
    assert torch.all(res.score[0][valid][:-1] >= res.score[0][valid][1:])  # best first
    assert torch.all((res.confidence > 0) & (res.confidence <= 1))
    assert _answer(table, res) == "B1a_SB1_RB1_B"
    assert table.key[table.level_slice(3)][int(res.best[1, 3])] == "A1b_SA1_RA1_A"
    # distances reported are the photo's squared distances to the path's places
    d = geom.sq_dist(z[0], pts[3][res.best[0, 3]])
    assert torch.isclose(res.sq_dist[0, 0, 3], d)


def test_deterministic_on_ties(tree_and_points):
    table, tree, tangents = tree_and_points
    geom = Geometry("euclidean")
    pts = [geom.to_point(t) for t in tangents]
    z = torch.tensor([[0.0, 0.0]], dtype=torch.float64)  # equidistant from RA1 and RA2
    runs = [beam_search(geom, z, pts, tree, beam=1).best for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs)
    assert table.key[table.level_slice(1)][int(runs[0][0, 1])] == "RA1_A"  # lower index wins


def test_batched_equals_one_by_one(tree_and_points):
    table, tree, tangents = tree_and_points
    geom = Geometry("lorentz")
    pts = [geom.to_point(t) for t in tangents]
    z = geom.to_point(torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2)
    batched = beam_search(geom, z, pts, tree, beam=3)
    for i in range(6):
        one = beam_search(geom, z[i:i + 1], pts, tree, beam=3)
        assert torch.equal(one.paths[0], batched.paths[i])


def _path_sq(geom, z, pts, tree, city: int) -> float:
    """Summed squared distance from z of a city's path, computed by hand."""
    total, node = 0.0, city
    for lv in range(3, -1, -1):
        total += float(geom.sq_dist(z[0], pts[lv][node]))
        if lv:
            node = int(tree.parents[lv][node])
    return total


@pytest.mark.parametrize("kind", ["euclidean", "lorentz"])
def test_path_score_answers_the_path_of_smallest_summed_distance(tree_and_points, kind):
    """score="path": the answer minimises d_0^2 + ... + d_3^2 over every city (checked by
    hand), beam (wide enough) and flat agree, and the score is minus that sum."""
    table, tree, tangents = tree_and_points
    geom = Geometry(kind, 1.0)
    pts = [geom.to_point(t) for t in tangents]
    z = geom.to_point(torch.tensor([PHOTO], dtype=torch.float64))
    n_city = table.level_size(3)
    sums = [_path_sq(geom, z, pts, tree, c) for c in range(n_city)]
    want = min(range(n_city), key=lambda c: sums[c])
    flat = flat_search(geom, z, pts, tree, k=3, score="path")
    wide = beam_search(geom, z, pts, tree, beam=8, score="path")
    batched = beam_search(geom, z.expand(3, -1).contiguous(), pts, tree, beam=8, score="path")
    for res in (flat, wide):
        assert int(res.best[0, 3]) == want
        assert float(res.score[0, 0]) == pytest.approx(-sums[want], rel=1e-9)
        # the paths after the answer come in order of their summed distance
        s = res.score[0][torch.isfinite(res.score[0])]
        assert torch.all(s[:-1] >= s[1:])
    assert torch.equal(batched.paths[0], wide.paths[0]) and torch.equal(batched.paths[2], wide.paths[0])
    # the paths are the tree's and their per-level distances are each place's own
    for lv in range(4):
        d = geom.sq_dist(z[0], pts[lv][wide.paths[0, 0, lv]])
        assert float(wide.sq_dist[0, 0, lv]) == pytest.approx(float(d), rel=1e-9)


def test_unknown_score_is_refused(tree_and_points):
    table, tree, tangents = tree_and_points
    geom = Geometry("euclidean", 1.0)
    pts = [geom.to_point(t) for t in tangents]
    z = geom.to_point(torch.tensor([PHOTO], dtype=torch.float64))
    with pytest.raises(ValueError, match="score"):
        beam_search(geom, z, pts, tree, score="greedy")
    with pytest.raises(ValueError, match="score"):
        flat_search(geom, z, pts, tree, score="greedy")


def test_a_result_moved_to_the_cpu_keeps_every_field(tree_and_points):
    from dataclasses import fields

    table, tree, tangents = tree_and_points
    geom = Geometry("lorentz", 1.0)
    res = beam_search(geom, geom.to_point(torch.tensor([PHOTO], dtype=torch.float64)),
                      [geom.to_point(t) for t in tangents], tree, beam=2)
    res.gps = torch.zeros(1, 2, 2)
    res.levels = (torch.ones(1, 2), torch.ones(1, 4))
    moved = res.cpu()
    for f in fields(res):
        a, b = getattr(res, f.name), getattr(moved, f.name)
        if a is None:
            assert b is None
        elif isinstance(a, tuple):
            assert all(torch.equal(x, y) and y.device.type == "cpu" for x, y in zip(a, b))
        else:
            assert torch.equal(a, b) and b.device.type == "cpu"
