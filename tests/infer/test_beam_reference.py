"""The batched beam search against the straightforward reference (one photo at a time)."""

import pytest
import torch

from hierloc.bench import hierarchical_points, synthetic_tree
from hierloc.infer.beam import beam_search
from hierloc.model.geometry import Geometry
from tests.infer.reference_beam import reference_beam_search


@pytest.mark.parametrize("kind", ["lorentz", "euclidean"])
@pytest.mark.parametrize("beam", [1, 3, 10])
def test_beam_search_equals_the_reference(kind, beam):
    sizes = (12, 60, 300, 2000)
    tree = synthetic_tree(sizes, seed=3)
    geom = Geometry(kind, 1.0)
    pts, tangents = hierarchical_points(tree, 16, geom, seed=3)
    g = torch.Generator().manual_seed(5)
    city_t = tangents[3][torch.randint(0, sizes[3], (40,), generator=g)]
    z = geom.to_point(city_t + 0.3 * torch.randn(city_t.shape, generator=g))  # (40, p)
    z = torch.cat([z, geom.to_point(torch.randn(8, 16, generator=g))])  # and photos far from any city
    fast = beam_search(geom, z, pts, tree, beam=beam, tau=0.7)
    paths, dists, score, conf = reference_beam_search(geom, z, pts, tree, beam=beam, tau=0.7)
    assert torch.equal(fast.paths, paths)
    assert torch.allclose(fast.sq_dist, dists, rtol=1e-5, atol=0)
    assert torch.equal(torch.isinf(fast.score), torch.isinf(score))
    assert torch.allclose(fast.confidence, conf, rtol=1e-4, atol=1e-6)


def test_beam_search_equals_the_reference_on_the_paper_sized_tree():
    """The benchmark's own table (244,287 places, d = 128), a fixed set of 64 queries."""
    tree = synthetic_tree()
    geom = Geometry("lorentz", 1.0)
    pts, tangents = hierarchical_points(tree, 128, geom, seed=0)
    g = torch.Generator().manual_seed(1)
    city_t = tangents[3][torch.randint(0, tree.sizes[3], (64,), generator=g)]
    z = geom.to_point(city_t + 0.05 * torch.randn(city_t.shape, generator=g))
    fast = beam_search(geom, z, pts, tree, beam=10)
    paths, dists, score, conf = reference_beam_search(geom, z, pts, tree, beam=10)
    assert torch.equal(fast.paths, paths)
    assert torch.allclose(fast.sq_dist, dists, rtol=1e-5)
    # country distances here are large (d^2 ~ 450) and come from a matrix product whose
    # float32 rounding depends on the batch (~1e-3 absolute): softmax moves by as much
    assert torch.allclose(fast.confidence, conf, rtol=0, atol=5e-4)


@pytest.mark.parametrize("beam", [1, 10])
def test_one_photo_at_a_time_equals_the_batch_and_the_reference(beam):
    """B = 1 takes its own, leaner path: the same answers as the batch and the reference."""
    sizes = (12, 60, 300, 2000)
    tree = synthetic_tree(sizes, seed=4)
    geom = Geometry("lorentz", 1.0)
    pts, tangents = hierarchical_points(tree, 16, geom, seed=4)
    g = torch.Generator().manual_seed(6)
    z = geom.to_point(tangents[3][torch.randint(0, sizes[3], (20,), generator=g)] + 0.3 * torch.randn(20, 16, generator=g))
    batch = beam_search(geom, z, pts, tree, beam=beam, tau=0.7)
    paths, dists, score, conf = reference_beam_search(geom, z, pts, tree, beam=beam, tau=0.7)
    for i in range(20):
        one = beam_search(geom, z[i:i + 1], pts, tree, beam=beam, tau=0.7)
        assert torch.equal(one.paths, batch.paths[i:i + 1]) and torch.equal(one.paths, paths[i:i + 1])
        assert torch.allclose(one.sq_dist, dists[i:i + 1], rtol=1e-5)
        assert torch.allclose(one.score, score[i:i + 1], rtol=1e-5)
        assert torch.allclose(one.confidence, conf[i:i + 1], rtol=1e-4, atol=1e-6)
