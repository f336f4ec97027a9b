"""Beam search down the place hierarchy: a pure, batched function.

Inputs are the photo points z (B, p), the place points of each level (N_l, p), and the
tree as CSR arrays (children of level l in level l+1, local indices). At the country
level every country is scored; below, only the children of the k kept places. At each
level candidates are ranked by their own squared geodesic distance to the photo and the
best k are kept; ties go to the lower index (stable sort), so results are deterministic.
The answer is the kept city nearest to the photo; ``flat`` search instead scans every
city and reads the path off the parents (no beam needed).

``score="path"`` ranks instead by the path's summed squared distance (its own place's
plus every ancestor's, d_0^2 + ... + d_l^2), at every level and for the answer: the
standard beam search over per-level log-probabilities -d_l^2 / tau. A model trained so
that each level's softmax is that level's posterior (train.geoclip_recipe) answers with
the path of largest summed log-probability, so its country is decided by the country
level, not by one city's distance; the default, ``"city"``, is the older rule.

Confidence of the answer at level l: softmax(-d^2 / tau) over the candidates scored at
that level (all countries at level 0), taken at the answer's place. tau is the model's
learned temperature: the training loss fits exactly this softmax, so it is calibrated by
construction on the training distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

NUM_LEVELS = 4


@dataclass(frozen=True)
class Hierarchy:
    """The tree in local indices: per level l (0..2) the CSR children of its places in
    level l+1 (offsets (N_l + 1,), index (M_l,)), per level l (1..3) the parent of each
    place in level l-1 (N_l,). parents[0] is empty."""

    sizes: tuple
    child_offsets: tuple
    child_index: tuple
    parents: tuple

    @classmethod
    def from_table(cls, table, device=None) -> "Hierarchy":
        starts = [table.level_slice(lv).start for lv in range(NUM_LEVELS)]
        sizes = tuple(table.level_size(lv) for lv in range(NUM_LEVELS))
        offsets, index, parents = [], [], [torch.zeros(0, dtype=torch.long)]
        off_all, idx_all = table.child_offsets, table.child_index
        for lv in range(NUM_LEVELS - 1):
            sl = table.level_slice(lv)
            off = off_all[sl.start:sl.stop + 1]
            offsets.append(torch.as_tensor(off - off[0], dtype=torch.long, device=device))
            index.append(torch.as_tensor(idx_all[off[0]:off[-1]] - starts[lv + 1], dtype=torch.long, device=device))
        for lv in range(1, NUM_LEVELS):
            sl = table.level_slice(lv)
            parents.append(torch.as_tensor(table.parent[sl] - starts[lv - 1], dtype=torch.long, device=device))
        return cls(sizes, tuple(offsets), tuple(index), tuple(parents))

    @classmethod
    def from_parents(cls, parents: list, device=None) -> "Hierarchy":
        """From parent arrays: parents[l] (N_l,) local index in level l-1, l = 1..3,
        plus the country count as parents[0] = N_0 (an int)."""
        sizes = [int(parents[0])] + [len(p) for p in parents[1:]]
        offsets, index, par = [], [], [torch.zeros(0, dtype=torch.long, device=device)]
        for lv in range(1, NUM_LEVELS):
            p = torch.as_tensor(parents[lv], dtype=torch.long)
            order = torch.argsort(p, stable=True)
            counts = torch.bincount(p, minlength=sizes[lv - 1])
            offsets.append(torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)]).to(device))
            index.append(order.to(device))
            par.append(p.to(device))
        return cls(tuple(sizes), tuple(offsets), tuple(index), tuple(par))

    def to(self, device) -> "Hierarchy":
        return Hierarchy(self.sizes, *(tuple(t.to(device) for t in group)
                                       for group in (self.child_offsets, self.child_index, self.parents)))


@dataclass
class SearchResult:
    """paths (B, k, 4) local indices per level (-1 where fewer than k paths exist);
    sq_dist (B, k, 4) squared geodesic distance of each path's place to the photo;
    score (B, k) = -sq_dist at the city level (higher is better; -inf for missing);
    confidence (B, 4): the best path's per-level confidence;
    gps (B, k, 2) degrees, when the decoder places a path finer than its city's centroid;
    probability (B, k), when the decoder gives each path a posterior probability;
    levels ((B, N0), (B, N1)), when the decoder gives its own probability of every country
    and region (else infer.predictor reads beam search's);
    cities ((B, M) local city indices, (B, M) probabilities), when the decoder gives a
    distribution over more cities than its k paths (the Poincare disk places the photo
    by it; else by the paths' probabilities)."""

    paths: torch.Tensor
    sq_dist: torch.Tensor
    score: torch.Tensor
    confidence: torch.Tensor
    gps: torch.Tensor | None = None
    probability: torch.Tensor | None = None
    levels: tuple | None = None
    cities: tuple | None = None

    @property
    def best(self) -> torch.Tensor:
        return self.paths[:, 0]  # (B, 4)

    def cpu(self) -> "SearchResult":
        """The same result with every tensor in the CPU's memory (what the predictor reads)."""
        def move(v):
            return tuple(t.cpu() for t in v) if isinstance(v, tuple) else (None if v is None else v.cpu())
        return SearchResult(*(move(getattr(self, f.name)) for f in fields(self)))


def _topk_stable(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest of each row with ties to the lower column: (B, M) -> (B, k) x2.

    float32 rows of non-negative values (squared distances, inf padding) take one top-k
    over int64 keys (the float's bits, which order like the values, then the column):
    exactly a stable sort's first k, without sorting the whole row."""
    if d.dtype == torch.float32 and d.device.type == "cpu" and d.numel() > 4096 and d.shape[1] < 2 ** 31:
        bits = (d + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into +0.0
        key = (bits << 32) | torch.arange(d.shape[1], device=d.device)  # (B, M) unique keys
        idx = torch.topk(key, k, dim=1, largest=False, sorted=True).indices  # (B, k) columns
        if not bool((bits < 0).any()):  # negative or NaN-with-sign values: keep the sort's order
            return d.gather(1, idx), idx
    vals, idx = torch.sort(d, dim=1, stable=True)
    return vals[:, :k], idx[:, :k]


CHUNK = 256
"""Photos searched together: the (chunk, W, p) candidate tensors of a level then fit in
the CPU's cache and their memory is reused, instead of fresh 100+ MB buffers per level."""


SCORES = ("city", "path")


def beam_search(geometry, z: torch.Tensor, level_points: list[torch.Tensor], tree: Hierarchy,
                beam: int = 10, tau: float | torch.Tensor = 1.0, chunk: int | None = None,
                score: str = "city") -> SearchResult:
    """Batched beam search; see the module docstring. z (B, p) -> SearchResult."""
    if int(beam) < 1:
        raise ValueError("beam width must be at least 1")
    if score not in SCORES:
        raise ValueError(f"beam score must be one of {SCORES}, got {score!r}")
    path = score == "path"
    chunk = chunk or (CHUNK if z.device.type == "cpu" else 4096)
    if z.shape[0] == 1 and not path:
        return _beam_search_one(geometry, z, level_points, tree, int(beam), tau)
    if z.shape[0] <= chunk:
        return _beam_search(geometry, z, level_points, tree, int(beam), tau, path)
    parts = [_beam_search(geometry, z[i:i + chunk], level_points, tree, int(beam), tau, path)
             for i in range(0, z.shape[0], chunk)]
    return SearchResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("paths", "sq_dist", "score", "confidence")))


def _beam_search(geometry, z, level_points, tree, k: int, tau, path: bool = False) -> SearchResult:
    d0 = geometry.sq_dist_matrix(z, level_points[0])  # (B, N0)
    conf_logits = [-d0 / tau]  # per level: (B, M_l) logits of the scored candidates
    kk = min(k, d0.shape[1])
    vals, idx = _topk_stable(d0, kk)
    hist_idx = [idx]          # (B, kk) local indices kept at each level
    hist_parent = [None]      # (B, kk) which kept beam of the level above each came from
    hist_dist = [vals]        # (B, kk) the kept places' own squared distances
    hist_col = [idx]          # (B, kk) column of each kept place among the level's candidates
    cum = vals                # (B, kk) what the kept places were ranked by
    for lv in range(1, NUM_LEVELS):
        C, P = _children_of_kept(tree, lv, hist_idx[-1])  # (B, W) child ids (-1: padding), beam of each
        Y = level_points[lv].index_select(0, C.clamp_min(0).reshape(-1)).view(*C.shape, -1)  # (B, W, p)
        D = geometry.sq_dist_to_gathered(z, Y)  # (B, W): sq_dist's formula, computed in Y's memory
        D = D.masked_fill(C < 0, float("inf"))
        conf_logits.append(-D / tau)
        kk = min(k, D.shape[1])
        rank = D + cum.gather(1, P) if path else D  # path: the summed distance down to here
        cum, order = _topk_stable(rank, kk)
        vals = D.gather(1, order)
        hist_idx.append(torch.where(torch.isfinite(cum), C.gather(1, order), torch.full_like(order, -1)))
        hist_parent.append(P.gather(1, order))
        hist_dist.append(vals)
        hist_col.append(order)
    res = _assemble(hist_idx, hist_parent, hist_dist, hist_col, conf_logits, k)
    if path:  # the score is the path's: minus its summed squared distance
        res.score = torch.where(torch.isfinite(res.score), -res.sq_dist.sum(-1), res.score)
    return res


def _beam_search_one(geometry, z, level_points, tree, k: int, tau) -> SearchResult:
    """The same search for one photo (the app's case) in 1-D steps: about half the
    operations of the batched path, whose per-operation cost dominates at B = 1."""
    d = geometry.sq_dist_matrix(z, level_points[0])[0]  # (N0,)
    vals, cols = torch.sort(d, stable=True)
    vals, cols = vals[:k], cols[:k]
    kept, logits, hist = cols, [-d / tau], [(cols, None, vals, cols)]  # per level: (ids, beam, d, column)
    for lv in range(1, NUM_LEVELS):
        off, index = tree.child_offsets[lv - 1], tree.child_index[lv - 1]
        first = torch.take(off, kept)  # (kp,)
        counts = torch.take(off, kept + 1) - first
        total = int(counts.sum())
        if total == 0:
            break
        ends = torch.cumsum(counts, 0)
        pos = torch.repeat_interleave(first - ends + counts, counts, output_size=total)
        pos += torch.arange(total, device=z.device)  # (M,) CSR positions, beam by beam
        child = torch.take(index, pos)  # (M,) local ids at lv
        beam_of = torch.repeat_interleave(torch.arange(kept.shape[0], device=z.device), counts, output_size=total)
        Y = level_points[lv].index_select(0, child)[None]  # (1, M, p)
        d = geometry.sq_dist_to_gathered(z, Y)[0]  # (M,)
        logits.append(-d / tau)
        vals, cols = torch.sort(d, stable=True)
        vals, cols = vals[:k], cols[:k]
        kept = torch.take(child, cols)
        hist.append((kept, torch.take(beam_of, cols), vals, cols))
    kk = hist[-1][0].shape[0]
    paths = torch.full((1, k, NUM_LEVELS), -1, dtype=torch.long, device=z.device)
    dists = torch.full((1, k, NUM_LEVELS), float("inf"), dtype=d.dtype, device=z.device)
    conf = torch.zeros((1, NUM_LEVELS), dtype=d.dtype, device=z.device)
    if len(hist) == NUM_LEVELS:  # else some kept place had no children: no complete path
        slot = torch.arange(kk, device=z.device)
        for lv in range(NUM_LEVELS - 1, -1, -1):
            ids, beam, dist, cols = hist[lv]
            paths[0, :kk, lv], dists[0, :kk, lv] = ids[slot], dist[slot]
            lg = logits[lv].double()
            conf[0, lv] = torch.exp(lg - lg[cols[slot[0]]]).sum().reciprocal()  # e^l_c / sum e^l
            if lv > 0:
                slot = beam[slot]
    score = -dists[:, :, -1]  # -inf where no path
    return SearchResult(paths, dists, score, conf)


def beam_distribution(geometry, z: torch.Tensor, level_points: list[torch.Tensor], tree: Hierarchy,
                      beam: int, tau) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities beam search gives: over every country, softmax(-d^2 / tau); over
    the regions it scores (the children of the ``beam`` countries it keeps), softmax over
    those, 0 elsewhere: z (B, p) -> (B, N0), (B, N1) float64."""
    d0 = geometry.sq_dist_matrix(z, level_points[0])  # (B, N0)
    countries = torch.softmax(-d0.double() / tau, 1)
    _, kept = _topk_stable(d0, min(beam, d0.shape[1]))
    C, _ = _children_of_kept(tree, 1, kept)  # (B, W)
    d1 = geometry.sq_dist(z[:, None, :], level_points[1][C.clamp_min(0)]).masked_fill(C < 0, float("inf"))
    p1 = torch.softmax(-d1.double() / tau, 1)
    regions = torch.zeros((z.shape[0], tree.sizes[1]), dtype=torch.float64, device=z.device)
    return countries, regions.scatter_add_(1, C.clamp_min(0), p1.masked_fill(C < 0, 0.0))


def _children_of_kept(tree: Hierarchy, lv: int, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The children (level lv) of each photo's kept places (level lv - 1), listed beam by
    beam and in the tree's child order within a place, padded to one width:
    kept (B, kp) local ids (-1: none) -> child ids (B, W) (-1: padding), beam index (B, W)."""
    off, index = tree.child_offsets[lv - 1], tree.child_index[lv - 1]
    valid = kept >= 0
    p = kept.clamp_min(0)
    first = off[p]  # (B, kp) where each kept place's children start in the CSR
    counts = torch.where(valid, off[p + 1] - first, torch.zeros_like(p))  # (B, kp)
    ends = torch.cumsum(counts, 1)  # (B, kp) end of each kept place's run in the row
    width = max(int(ends[:, -1].max()) if kept.shape[0] else 0, 1)
    slot = torch.arange(width, device=kept.device).expand(kept.shape[0], -1).contiguous()  # (B, W)
    beam_of = torch.searchsorted(ends, slot, right=True).clamp_max(kept.shape[1] - 1)  # (B, W)
    pos = first.gather(1, beam_of) + slot - (ends - counts).gather(1, beam_of)  # (B, W) CSR position
    inside = slot < ends[:, -1:]
    child = torch.where(inside, index[pos.clamp(0, index.shape[0] - 1)], torch.full_like(pos, -1))
    return child, beam_of


def _assemble(hist_idx, hist_parent, hist_dist, hist_col, conf_logits, k) -> SearchResult:
    B = hist_idx[-1].shape[0]
    kk = hist_idx[-1].shape[1]
    paths = torch.full((B, kk, NUM_LEVELS), -1, dtype=torch.long, device=hist_idx[-1].device)
    dists = torch.full((B, kk, NUM_LEVELS), float("inf"), dtype=hist_dist[-1].dtype, device=paths.device)
    beam_pos = torch.arange(kk, device=paths.device).expand(B, -1)  # (B, kk) position at this level
    confidence = torch.zeros((B, NUM_LEVELS), dtype=hist_dist[-1].dtype, device=paths.device)
    for lv in range(NUM_LEVELS - 1, -1, -1):
        paths[:, :, lv] = hist_idx[lv].gather(1, beam_pos.clamp_max(hist_idx[lv].shape[1] - 1))
        dists[:, :, lv] = hist_dist[lv].gather(1, beam_pos.clamp_max(hist_dist[lv].shape[1] - 1))
        # softmax over the level's candidates at the best path's column, in float64
        col = hist_col[lv].gather(1, beam_pos[:, :1].clamp_max(hist_col[lv].shape[1] - 1))  # (B, 1)
        logits = conf_logits[lv].double()
        conf = torch.exp(logits - logits.gather(1, col)).sum(1).reciprocal()  # e^l_c / sum e^l
        confidence[:, lv] = conf.nan_to_num_(0.0)  # no candidate at this level: 0
        if lv > 0:
            beam_pos = hist_parent[lv].gather(1, beam_pos).clamp_min(0)
    missing = hist_idx[-1] < 0
    paths.masked_fill_(missing[:, :, None], -1)
    dists.masked_fill_(missing[:, :, None], float("inf"))
    score = torch.where(missing, torch.full_like(dists[:, :, -1], -float("inf")), -dists[:, :, -1])
    return _pad(SearchResult(paths, dists, score, confidence), k)


def _pad(res: SearchResult, k: int) -> SearchResult:
    """Pad to k paths when fewer exist (-1 places, inf distances, -inf scores)."""
    B, kk = res.score.shape
    if kk >= k:
        return res
    pad = k - kk
    return SearchResult(
        torch.cat([res.paths, res.paths.new_full((B, pad, NUM_LEVELS), -1)], 1),
        torch.cat([res.sq_dist, res.sq_dist.new_full((B, pad, NUM_LEVELS), float("inf"))], 1),
        torch.cat([res.score, res.score.new_full((B, pad), -float("inf"))], 1),
        res.confidence)


def _confidence(logits: torch.Tensor, ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """softmax(logits) at the chosen id of each row: (B, M), (B, M), (B,) -> (B,)."""
    prob = torch.softmax(logits.double(), dim=1)  # float64: tiny probabilities must not tie
    hit = ids == chosen[:, None]
    return (prob * hit).sum(1).to(logits.dtype)


def flat_search(geometry, z: torch.Tensor, level_points: list[torch.Tensor], tree: Hierarchy,
                k: int = 10, tau: float | torch.Tensor = 1.0, chunk: int = 65536, score: str = "city") -> SearchResult:
    """Nearest k cities over the whole city level; paths read off the parents. With
    score="path", the k cities of smallest summed squared distance over their path."""
    if score not in SCORES:
        raise ValueError(f"search score must be one of {SCORES}, got {score!r}")
    cities = level_points[-1]
    if score == "path":
        upper = [geometry.sq_dist_matrix(z, level_points[lv]) for lv in range(NUM_LEVELS - 1)]  # (B, N_l)
        anc = [torch.arange(cities.shape[0], device=z.device)]  # ancestors of every city, city level first
        for lv in range(NUM_LEVELS - 1, 0, -1):
            anc.insert(0, tree.parents[lv][anc[0]])
    best_d, best_i, lse = None, None, None
    for start in range(0, cities.shape[0], chunk):
        d = geometry.sq_dist_matrix(z, cities[start:start + chunk])  # (B, C)
        part_lse = torch.logsumexp(-d.double() / tau, dim=1)  # over the cities' own distances
        lse = part_lse if lse is None else torch.logaddexp(lse, part_lse)
        if score == "path":
            for lv in range(NUM_LEVELS - 1):
                d = d + upper[lv][:, anc[lv][start:start + chunk]]
        vals, idx = _topk_stable(d, min(k, d.shape[1]))
        idx = idx + start
        if best_d is None:
            best_d, best_i = vals, idx
        else:  # earlier chunks first in the concatenation: ties keep the lower index
            vals, order = _topk_stable(torch.cat([best_d, vals], 1), k)
            best_i = torch.cat([best_i, idx], 1).gather(1, order)
            best_d = vals
    B, kk = best_i.shape
    paths = torch.empty((B, kk, NUM_LEVELS), dtype=torch.long, device=z.device)
    paths[:, :, -1] = best_i
    for lv in range(NUM_LEVELS - 1, 0, -1):
        paths[:, :, lv - 1] = tree.parents[lv][paths[:, :, lv]]
    dists = torch.stack([geometry.sq_dist(z[:, None, :].expand(-1, kk, -1), level_points[lv][paths[:, :, lv]])
                         for lv in range(NUM_LEVELS)], dim=-1)  # (B, kk, 4)
    if score == "city":
        dists[:, :, -1] = best_d  # the very values ranked (path: best_d is the path's sum)
    conf = []
    for lv in range(NUM_LEVELS - 1):
        logits = -geometry.sq_dist_matrix(z, level_points[lv]) / tau  # (B, N_l): small levels
        conf.append(_confidence(logits, torch.arange(logits.shape[1], device=z.device).expand(B, -1), paths[:, 0, lv]))
    own = dists[:, 0, -1]  # the answer city's own squared distance
    conf.append(torch.exp(-own.double() / tau - lse).to(own.dtype))
    return _pad(SearchResult(paths, dists, -best_d, torch.stack(conf, 1)), k)
