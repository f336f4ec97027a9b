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
