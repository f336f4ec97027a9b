"""Is the atlas a tree? The numbers of `python -m hierloc atlas stats`, measured exactly.

- ``farther_than_parent``: places further from the Earth's point than their parent;
- ``nearest_up_is_parent``: places whose nearest place one level up is their parent;
- ``nearest_same_level_is_sibling``: among places that have a sibling, those whose
  nearest place of their own level is one;
- ``sibling_order``: triples of siblings whose cyclic order around their parent in the
  atlas is the cyclic order of their geographic directions from the parent (for
  countries: longitude); sampled, ``triples`` per level;
- ``max_radius`` / ``mean_radius``: distance from the Earth's point per level.

Every place is a query (no sampling) for the first three: the nearest neighbour is found
exactly by pruning. A candidate y can only be nearer to x than a known place at distance
u if sinh(rho_x) sinh(rho_y) sin^2(C/2) < sinh^2(u/2) (C the angle between them at the
Earth's point), so only candidates in a narrow window of angles around x are compared,
each with the exact distance.
"""

from __future__ import annotations

import numpy as np

from hierloc import LEVELS
from hierloc.manifold import atlas as A

# Slack on the angular window: the global angles (a float64 sum of the slots) are good to
# about 1e-15 rad; the window is widened far beyond that so no candidate is missed.
WINDOW_SLACK = 1e-9
# Two directions closer than this are a tie: their order is not a fact of geography.
TIE = 1e-12


def _theta(atlas: A.Atlas, rows: np.ndarray) -> np.ndarray:
    return A.wrap(atlas.inc[rows].sum(-1))


def nearest(atlas: A.Atlas, queries: np.ndarray, cands: np.ndarray, bound: np.ndarray,
            exclude_self: bool = False) -> np.ndarray:
    """For each query row, the candidate row nearest to it, found exactly among the
    candidates that could lie within ``bound`` (an upper bound on the nearest distance,
    e.g. the distance to a known candidate): (Q,), (N,), (Q,) -> (Q,) rows (-1 if none
    is within the bound)."""
    theta_c = _theta(atlas, cands)
    order = np.argsort(theta_c, kind="stable")
    th = np.concatenate([theta_c[order] - 2 * np.pi, theta_c[order], theta_c[order] + 2 * np.pi])
    idx = np.concatenate([order, order, order])
    rho_min = float(atlas.rho[cands].min())
    tq = _theta(atlas, queries)
    # the widest angle C a candidate within the bound can have (the smallest rho_y gives it)
    s = np.sinh(bound / 2) / np.sqrt(np.sinh(atlas.rho[queries]) * np.sinh(rho_min))
    half = np.where(s >= 1.0, np.pi, 2 * np.arcsin(np.minimum(s, 1.0))) + WINDOW_SLACK
    lo = np.searchsorted(th, tq - half, side="left")
    hi = np.searchsorted(th, tq + half, side="right")
    hi = np.minimum(hi, lo + len(cands))  # never the same candidate twice
    counts = hi - lo
    out = np.full(len(queries), -1, dtype=np.int64)
    chunk_pairs = 4_000_000
    start = 0
    while start < len(queries):
        stop = start + 1
        total = counts[start]
        while stop < len(queries) and total + counts[stop] <= chunk_pairs:
            total += counts[stop]
            stop += 1
        c = counts[start:stop]
        q = np.repeat(queries[start:stop], c)
        pos = np.repeat(lo[start:stop] - np.cumsum(c) + c, c) + np.arange(int(c.sum()))
        y = cands[idx[pos]]
        S = A.pair_sinh2_half(atlas.rho[q], atlas.rho[y], A.angle_diff(atlas.inc[q], atlas.inc[y]))
        if exclude_self:
            S = np.where(y == q, np.inf, S)
        seg = np.repeat(np.arange(stop - start), c)
        best = np.full(stop - start, np.inf)
        np.minimum.at(best, seg, S)
        hit = (S == best[seg]) & np.isfinite(S)
        first = np.full(stop - start, -1, dtype=np.int64)
        # the first (lowest row) among equal minima, for determinism
        cand_rows = np.where(hit, y, np.iinfo(np.int64).max)
        mins = np.full(stop - start, np.iinfo(np.int64).max)
        np.minimum.at(mins, seg, cand_rows)
        first = np.where(mins < np.iinfo(np.int64).max, mins, -1)
        out[start:stop] = first
        start = stop
    return out


def _neighbour_sibling_bound(atlas: A.Atlas, table, rows: np.ndarray) -> np.ndarray:
    """Distance from each place to a sibling beside it in its parent's fan (inf when it
    has none): an upper bound on its nearest same-level distance. (N,) -> (N,)."""
    par = atlas.parent[rows]
    order = rows[np.lexsort((atlas.phi[rows], par))]
    po = atlas.parent[order]
    bound = np.full(len(table), np.inf)
    same_next = np.r_[po[1:] == po[:-1], False]
    nxt = np.r_[order[1:], order[-1]]
    d_next = np.where(same_next, atlas.dist(order, nxt), np.inf)
    d_prev = np.r_[np.inf, d_next[:-1]]
    bound[order] = np.minimum(d_next, d_prev)
    return bound[rows]


def _cyclic_sign(a, b, c):
    """+1 when a -> b -> c runs counterclockwise around the circle, -1 clockwise, 0 on ties."""
    ab, bc, ca = (np.mod(y - x, 2 * np.pi) for x, y in ((a, b), (b, c), (c, a)))
    s = ab + bc + ca  # 2 pi for counterclockwise, 4 pi for clockwise
    tie = (np.minimum(np.minimum(ab, bc), ca) < TIE) | (np.maximum(np.maximum(ab, bc), ca) > 2 * np.pi - TIE)
    sign = np.where(np.isclose(s, 2 * np.pi), 1, np.where(np.isclose(s, 4 * np.pi), -1, 0))
    return np.where(tie, 0, sign)


def _sibling_triples(atlas: A.Atlas, table, lv: int, triples: int, rng) -> tuple[int, int]:
    """(matching, compared) over up to ``triples`` random triples of siblings at level lv
    with three distinct geographic directions."""
    sl = table.level_slice(lv)
    rows = np.arange(sl.start, sl.stop)
    par = atlas.parent[rows]
    groups = {}
    for r, p in zip(rows, par):
        groups.setdefault(int(p), []).append(int(r))
    big = [np.array(g) for g in groups.values() if len(g) >= 3]
    if not big:
        return 0, 0
    sizes = np.array([len(g) for g in big], dtype=np.float64)
    pick = rng.choice(len(big), size=triples, p=sizes / sizes.sum())
    abc = np.array([rng.choice(big[i], 3, replace=False) for i in pick])  # (T, 3)
    geo = atlas.geo[abc]
    ang = atlas.phi[abc]
    g = _cyclic_sign(geo[:, 0], geo[:, 1], geo[:, 2])
    a = _cyclic_sign(ang[:, 0], ang[:, 1], ang[:, 2])
    ok = g != 0
    return int(((g == a) & ok).sum()), int(ok.sum())


def atlas_stats(atlas: A.Atlas, table, triples: int = 20_000, seed: int = 0) -> dict:
    """The numbers (module docstring), per level and over levels 1..3 ("all")."""
    rng = np.random.default_rng(seed)
    out = {"places": int(len(table)), "farther_than_parent": {}, "nearest_up_is_parent": {},
           "nearest_same_level_is_sibling": {}, "sibling_order": {}, "max_radius": {}, "mean_radius": {},
           "sampled": f"sibling_order: {triples:,} random triples of siblings per level; everything else: "
                      f"every place"}
    tot = np.zeros(6)
    for lv in range(4):
        sl = table.level_slice(lv)
        rows = np.arange(sl.start, sl.stop)
        name = LEVELS[lv]
        out["max_radius"][name] = round(float(atlas.rho[rows].max()), 3)
        out["mean_radius"][name] = round(float(atlas.rho[rows].mean()), 3)
        m, n = _sibling_triples(atlas, table, lv, triples, rng)
        out["sibling_order"][name] = round(m / n, 5) if n else None
        sib_bound = _neighbour_sibling_bound(atlas, table, rows)
        has_sib = np.isfinite(sib_bound)
        nn = nearest(atlas, rows[has_sib], rows, sib_bound[has_sib], exclude_self=True)
        sib_ok = int((atlas.parent[nn] == atlas.parent[rows[has_sib]]).sum())
        out["nearest_same_level_is_sibling"][name] = round(sib_ok / max(int(has_sib.sum()), 1), 5)
        if lv == 0:
            continue
        up = table.level_slice(lv - 1)
        par = atlas.parent[rows]
        far = int((atlas.rho[rows] > atlas.rho[par]).sum())
        nn_up = nearest(atlas, rows, np.arange(up.start, up.stop), atlas.tau[rows] * (1 + 1e-12) + 1e-12)
        up_ok = int((nn_up == par).sum())
        out["farther_than_parent"][name] = round(far / len(rows), 5)
        out["nearest_up_is_parent"][name] = round(up_ok / len(rows), 5)
        tot += (far, up_ok, len(rows), sib_ok, int(has_sib.sum()), 0)
    out["farther_than_parent"]["all"] = round(tot[0] / tot[2], 5)
    out["nearest_up_is_parent"]["all"] = round(tot[1] / tot[2], 5)
    out["nearest_same_level_is_sibling"]["all"] = round(tot[3] / tot[4], 5)
    return out
