"""One distribution over the place tree per photo (infer.confidence): coherent across the
levels, the same as zero-shot's masses at temperature 1, and fitted temperatures that
recover the ones the photos were drawn with."""

import math

import numpy as np
import pytest
import torch

from hierloc.infer import confidence as C
from hierloc.infer.beam import Hierarchy

# 2 countries; regions 0,1 in country 0 and 2 in country 1; one sub-region per region;
# cities 0,1 in sub-region 0, 2 in 1, 3,4 in 2
PARENTS = [None, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 2, 2])]


def scores(seed=0, batch=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, generator=g) for n in (2, 3, 3, 5)]


def test_marginals_are_the_chain_rule_by_hand_and_add_up_the_tree():
    s = scores()
    T = (0.5, 2.0, 1.0, 0.25)
    m = [x.exp() for x in C.tree_log_marginals(s, PARENTS, T)]
    b = 1
    pc = torch.softmax(s[0][b].double() / 0.5, 0)
    pr = torch.softmax(s[1][b, :2].double() / 2.0, 0)  # regions 0, 1 among their siblings
    p_city1 = pc[0] * pr[0] * 1.0 * torch.softmax(s[3][b, :2].double() / 0.25, 0)[1]
    assert math.isclose(float(m[3][b, 1]), float(p_city1), rel_tol=1e-12)
    assert math.isclose(float(m[1][b, 2]), float(pc[1]), rel_tol=1e-12)  # an only child has its parent's
    for lv in (1, 2, 3):  # every place's probability is the sum of its children's
        up = torch.zeros_like(m[lv - 1]).index_add_(1, PARENTS[lv], m[lv])
        assert torch.allclose(up, m[lv - 1], atol=1e-12)
    assert torch.allclose(m[3].sum(1), torch.ones(3, dtype=torch.float64))


def test_at_temperature_one_log_masses_come_back_unchanged():
    """Zero-shot's scores are its log masses, already summed up the tree: uncalibrated,
    what is shown is exactly what it computed."""
    g = torch.Generator().manual_seed(3)
    city = torch.log_softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), 1)
    mass = [None, None, None, city]
    from hierloc.infer.confidence import scatter_logsumexp

    for lv in (3, 2, 1):
        mass[lv - 1] = scatter_logsumexp(mass[lv], PARENTS[lv], (2, 3, 3)[lv - 1])
    out = C.tree_log_marginals(mass, PARENTS)
    for a, b in zip(out, mass):
        assert torch.allclose(a, b, atol=1e-12)


def test_a_temperature_keeps_every_order_among_siblings():
    s = scores(seed=5, batch=50)
    hot = C.tree_log_marginals(s, PARENTS, (3.0, 3.0, 3.0, 3.0))
    cold = C.tree_log_marginals(s, PARENTS, (0.2, 0.2, 0.2, 0.2))
    assert torch.equal(hot[0].argmax(1), cold[0].argmax(1))
    for a, b in ((3, 4), (0, 1)):  # siblings at the city level
        assert torch.equal(hot[3][:, a] > hot[3][:, b], cold[3][:, a] > cold[3][:, b])


def test_read_marginals_reads_the_answer_its_paths_and_the_top_cities():
    s = scores(seed=2, batch=2)
    m = C.tree_log_marginals(s, PARENTS, (1.0, 1.0, 1.0, 1.0))
    paths = torch.tensor([[[1, 2, 2, 3], [0, 0, 0, 1], [-1, -1, -1, -1]],
                          [[0, 1, 1, 2], [1, 2, 2, 4], [0, 0, 0, 0]]])
    shown = C.read_marginals(m, paths, cities=3)
    assert torch.allclose(shown["confidence"][0], torch.stack([m[lv][0, paths[0, 0, lv]] for lv in range(4)]).exp())
    assert shown["probability"][0, 2] == 0.0 and torch.isclose(shown["probability"][1, 1], m[3][1, 4].exp())
    idx, p = shown["cities"]
    assert idx.shape == (2, 3) and torch.all(p[:, :-1] >= p[:, 1:])
    assert torch.allclose(shown["levels"][0].sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.all(shown["confidence"][:, :-1] >= shown["confidence"][:, 1:])  # deeper is never surer


def test_bad_temperatures_are_refused():
    for bad in ((1.0, 1.0, 1.0), (1.0, 0.0, 1.0, 1.0), (1.0, float("nan"), 1.0, 1.0)):
        with pytest.raises(ValueError, match="temperatures"):
            C.tree_log_marginals(scores(), PARENTS, bad)


def test_calibration_error_by_hand():
    # bin (0.8, 0.9]: confidence 0.9, right half the time; bin (0.1, 0.2]: 0.2, never right
    assert C.calibration_error(np.array([0.9, 0.9, 0.2]), np.array([1, 0, 0])) == pytest.approx(
        100 * (2 / 3 * 0.4 + 1 / 3 * 0.2), abs=0.01)
    assert C.calibration_error(np.array([0.75] * 4), np.array([1, 1, 1, 0])) == 0.0


def drawn_chain(true_t, n=6000, width=6, seed=0):
    """Photos whose right answers are drawn from softmax(x / true_t) among siblings, level
    by level (a wrong place above makes every place below it wrong): chunks as
    answer_siblings gives them, and the hits."""
    rng = np.random.default_rng(seed)
    chunks, hits = [], []
    for start in range(0, n, 1000):
        levels, right = [], np.ones(1000, dtype=bool)
        hit = []
        for t in true_t:
            x = torch.as_tensor(rng.normal(0, 2, (1000, width)))
            x[:, width - 1] = -torch.inf  # padding, as answer_siblings pads
            pos = x.argmax(1)
            p = torch.softmax(x / t, 1).gather(1, pos[:, None]).squeeze(1).numpy()
            right = right & (rng.random(1000) < p)
            levels.append((x, pos))
            hit.append(right.copy())
        chunks.append(levels)
        hits.append(np.stack(hit, 1))
    return chunks, np.concatenate(hits)


def test_fit_recovers_the_temperatures_the_answers_were_drawn_with():
    true_t = (0.6, 1.5, 0.8, 3.0)
    chunks, hits = drawn_chain(true_t)
    fitted = C.fit_temperatures(chunks, hits)
    for got, want in zip(fitted, true_t):
        assert abs(math.log(got / want)) < 0.2, (fitted, true_t)
    before = C.summary(C.answer_confidence(chunks, C.UNCALIBRATED), hits)
    after = C.summary(C.answer_confidence(chunks, fitted), hits)
    for lv in after:
        assert after[lv]["calibration_error"] < 3.0
        assert after[lv]["calibration_error"] < before[lv]["calibration_error"]


def test_fit_refuses_scores_and_hits_of_different_photos():
    chunks, hits = drawn_chain((1.0, 1.0, 1.0, 1.0), n=1000)
    with pytest.raises(ValueError, match="photos"):
        C.fit_temperatures(chunks, hits[:10])


def test_answer_siblings_are_the_children_of_the_answers_parent():
    tree = Hierarchy.from_parents([2, *[p.numpy() for p in PARENTS[1:]]])
    s = scores(seed=4, batch=2)
    answer = torch.tensor([[0, 1, 1, 2], [1, 2, 2, 4]])
    sib = C.answer_siblings(s, tree, answer)
    x, pos = sib[1]  # regions of country 0 for photo 0: regions 0 and 1, the answer second
    assert pos[0] == 1 and torch.isclose(x[0, 1], s[1][0, 1].double())
    assert torch.isinf(x[1, 1:]).all() and torch.isclose(x[1, 0], s[1][1, 2].double())  # an only child
    x, pos = sib[3]  # cities of sub-region 2 for photo 1: cities 3 and 4
    assert pos[1] == 1 and torch.isclose(x[1, 0], s[3][1, 3].double())
