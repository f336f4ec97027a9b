"""A straightforward beam search, one photo at a time, kept as the reference that the
batched search in hierloc.infer.beam must reproduce exactly (paths and order) and
within float tolerance (distances, confidences).

The rules it encodes: level 0 scores every country; each later level scores the
children of the kept places, listed beam by beam (best kept place first) and, within a
place, in the tree's child order; each level keeps the k smallest squared geodesic
distances, ties to the earlier-listed candidate. A kept city's path is read back through
the place it came from. Confidence at level l: softmax(-d^2 / tau) over that level's
scored candidates, taken at the best path's place.
"""

import torch

NUM_LEVELS = 4


def reference_beam_search(geometry, z, level_points, tree, beam=10, tau=1.0):
    """-> paths (B, k, 4), sq_dist (B, k, 4), score (B, k), confidence (B, 4)."""
    B, k = z.shape[0], beam
    paths = torch.full((B, k, NUM_LEVELS), -1, dtype=torch.long)
    dists = torch.full((B, k, NUM_LEVELS), float("inf"), dtype=z.dtype)
    conf = torch.zeros(B, NUM_LEVELS, dtype=z.dtype)
    for b in range(B):
        zb = z[b:b + 1]
        # level 0: every country
        d = geometry.sq_dist_matrix(zb, level_points[0])[0]  # (N0,)
        cands = [(i, None) for i in range(d.shape[0])]  # (place, index of the kept parent)
        levels = []
        for lv in range(NUM_LEVELS):
            if lv > 0:
                kept_places = [c[0] for c in levels[-1]["kept"]]
                cands = []
                off, idx = tree.child_offsets[lv - 1], tree.child_index[lv - 1]
                for j, p in enumerate(kept_places):
                    for pos in range(int(off[p]), int(off[p + 1])):
                        cands.append((int(idx[pos]), j))
                if not cands:
                    levels.append({"cands": [], "d": torch.zeros(0), "kept": []})
                    continue
                ys = level_points[lv][torch.tensor([c[0] for c in cands])]
                d = geometry.sq_dist(zb.expand(len(cands), -1), ys)  # (M,)
            order = sorted(range(len(cands)), key=lambda i: (float(d[i]), i))[:k]
            kept = [(cands[i][0], cands[i][1], d[i]) for i in order]
            levels.append({"cands": cands, "d": d, "kept": kept})
        # read the paths back from the city level
        for slot, (place, parent, dist) in enumerate(levels[-1]["kept"]):
            paths[b, slot, 3], dists[b, slot, 3] = place, dist
            j = parent
            for lv in range(NUM_LEVELS - 2, -1, -1):
                p_place, p_parent, p_dist = levels[lv]["kept"][j]
                paths[b, slot, lv], dists[b, slot, lv] = p_place, p_dist
                j = p_parent
        for lv in range(NUM_LEVELS):
            lv_d = levels[lv]["d"]
            if len(levels[lv]["cands"]) == 0 or paths[b, 0, lv] < 0:
                continue
            prob = torch.softmax(-lv_d.double() / tau, 0)
            hit = [i for i, c in enumerate(levels[lv]["cands"]) if c[0] == int(paths[b, 0, lv])]
            conf[b, lv] = prob[hit].sum().to(z.dtype)
    score = torch.where(paths[:, :, 3] < 0, torch.full((B, k), -float("inf"), dtype=z.dtype), -dists[:, :, 3])
    return paths, dists, score, conf
