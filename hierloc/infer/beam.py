"""Beam search down the place hierarchy: a pure, batched function.

Inputs are the photo points z (B, p), the place points of each level (N_l, p), and the
tree as CSR arrays (children of level l in level l+1, local indices). At the country
level every country is scored; below, only the children of the k kept places. At each
level candidates are ranked by their own squared geodesic distance to the photo and the
best k are kept; ties go to the lower index (stable sort), so results are deterministic.
The answer is the kept city nearest to the photo; ``flat`` search instead scans every
city and reads the path off the parents (no beam needed).

Confidence of the answer at level l: softmax(-d^2 / tau) over the candidates scored at
that level (all countries at level 0), taken at the answer's place. tau is the model's
learned temperature: the training loss fits exactly this softmax, so it is calibrated by
construction on the training distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    probability (B, k), when the decoder gives each path a posterior probability."""

    paths: torch.Tensor
    sq_dist: torch.Tensor
    score: torch.Tensor
    confidence: torch.Tensor
    gps: torch.Tensor | None = None
    probability: torch.Tensor | None = None

    @property
    def best(self) -> torch.Tensor:
        return self.paths[:, 0]  # (B, 4)


def _topk_stable(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest of each row with ties to the lower column: (B, M) -> (B, k) x2."""
    vals, idx = torch.sort(d, dim=1, stable=True)
    return vals[:, :k], idx[:, :k]


def beam_search(geometry, z: torch.Tensor, level_points: list[torch.Tensor], tree: Hierarchy,
                beam: int = 10, tau: float | torch.Tensor = 1.0) -> SearchResult:
    """Batched beam search; see the module docstring. z (B, p) -> SearchResult."""
    B, k = z.shape[0], int(beam)
    if k < 1:
        raise ValueError("beam width must be at least 1")
    d0 = geometry.sq_dist_matrix(z, level_points[0])  # (B, N0)
    conf_logits = [-d0 / tau]  # per level: (B, M_l) logits of the scored candidates
    kk = min(k, d0.shape[1])
    vals, idx = _topk_stable(d0, kk)
    hist_idx = [idx]          # (B, kk) local indices kept at each level
    hist_parent = [None]      # (B, kk) which kept beam of the level above each came from
    hist_dist = [vals]
    cand_ids = [torch.arange(d0.shape[1], device=z.device).expand(B, -1)]
    for lv in range(1, NUM_LEVELS):
        parents = hist_idx[-1]  # (B, kp)
        kp = parents.shape[1]
        valid_parent = parents >= 0
        p = parents.clamp_min(0)
        off = tree.child_offsets[lv - 1]
        counts = torch.where(valid_parent, off[p + 1] - off[p], torch.zeros_like(p))  # (B, kp)
        flat_counts = counts.reshape(-1)  # (B * kp,)
        total = int(flat_counts.sum())
        seg = torch.repeat_interleave(torch.arange(B * kp, device=z.device), flat_counts)  # (T,)
        seg_start = torch.cumsum(flat_counts, 0) - flat_counts  # (B * kp,)
        within = torch.arange(total, device=z.device) - seg_start[seg]  # (T,)
        child = tree.child_index[lv - 1][off[p.reshape(-1)[seg]] + within]  # (T,) local ids at lv
        row = seg // kp  # (T,) photo of each candidate
        beam_of = seg % kp  # (T,) parent beam of each candidate
        d = geometry.sq_dist(z[row], level_points[lv][child])  # (T,)
        # Pad each photo's candidates into one row: position = rank within the photo.
        per_row = counts.sum(1)  # (B,)
        row_start = torch.cumsum(per_row, 0) - per_row
        pos = torch.arange(total, device=z.device) - row_start[row]
        width = max(int(per_row.max()) if B else 0, 1)
        D = torch.full((B, width), float("inf"), dtype=d.dtype, device=z.device)
        C = torch.full((B, width), -1, dtype=torch.long, device=z.device)
        P = torch.full((B, width), -1, dtype=torch.long, device=z.device)
        D[row, pos], C[row, pos], P[row, pos] = d, child, beam_of
        conf_logits.append(-D / tau)
        cand_ids.append(C)
        kk = min(k, width)
        vals, order = _topk_stable(D, kk)
        hist_idx.append(torch.where(torch.isfinite(vals), C.gather(1, order), torch.full_like(order, -1)))
        hist_parent.append(P.gather(1, order))
        hist_dist.append(vals)
    return _assemble(hist_idx, hist_parent, hist_dist, conf_logits, cand_ids, k)


def _assemble(hist_idx, hist_parent, hist_dist, conf_logits, cand_ids, k) -> SearchResult:
    B = hist_idx[-1].shape[0]
    kk = hist_idx[-1].shape[1]
    paths = torch.full((B, kk, NUM_LEVELS), -1, dtype=torch.long, device=hist_idx[-1].device)
    dists = torch.full((B, kk, NUM_LEVELS), float("inf"), dtype=hist_dist[-1].dtype, device=paths.device)
    beam_pos = torch.arange(kk, device=paths.device).expand(B, -1)  # (B, kk) position at this level
    for lv in range(NUM_LEVELS - 1, -1, -1):
        paths[:, :, lv] = hist_idx[lv].gather(1, beam_pos.clamp_max(hist_idx[lv].shape[1] - 1))
        dists[:, :, lv] = hist_dist[lv].gather(1, beam_pos.clamp_max(hist_dist[lv].shape[1] - 1))
        if lv > 0:
            beam_pos = hist_parent[lv].gather(1, beam_pos).clamp_min(0)
    missing = hist_idx[-1] < 0
    paths[missing] = -1
    dists[missing] = float("inf")
    score = torch.where(missing, torch.full_like(dists[:, :, -1], -float("inf")), -dists[:, :, -1])
    confidence = torch.stack([_confidence(conf_logits[lv], cand_ids[lv], paths[:, 0, lv])
                              for lv in range(NUM_LEVELS)], dim=1)  # (B, 4)
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
                k: int = 10, tau: float | torch.Tensor = 1.0, chunk: int = 65536) -> SearchResult:
    """Nearest k cities over the whole city level; paths read off the parents."""
    cities = level_points[-1]
    best_d, best_i, lse = None, None, None
    for start in range(0, cities.shape[0], chunk):
        d = geometry.sq_dist_matrix(z, cities[start:start + chunk])  # (B, C)
        part_lse = torch.logsumexp(-d.double() / tau, dim=1)
        lse = part_lse if lse is None else torch.logaddexp(lse, part_lse)
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
    dists[:, :, -1] = best_d
    conf = []
    for lv in range(NUM_LEVELS - 1):
        logits = -geometry.sq_dist_matrix(z, level_points[lv]) / tau  # (B, N_l): small levels
        conf.append(_confidence(logits, torch.arange(logits.shape[1], device=z.device).expand(B, -1), paths[:, 0, lv]))
    conf.append(torch.exp(-best_d[:, 0].double() / tau - lse).to(best_d.dtype))
    return _pad(SearchResult(paths, dists, -dists[:, :, -1], torch.stack(conf, 1)), k)
