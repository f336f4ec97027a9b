"""Does an embedding of the place tree look like a tree? Numbers for the disk's claim.

In a good hyperbolic embedding of a hierarchy a country sits nearer the centre than its
regions, which fan out around it, and so on down to the cities. Two shares per level
(regions, sub-regions, cities) and over all of them:

- ``farther_than_parent``: places further from the origin than their parent;
- ``nearest_is_parent``: places whose nearest place one level up is their own parent.

Plus the mean distance from the origin per level. Computed on every place, or on a
random sample of ``sample`` places per level.
"""

from __future__ import annotations

import numpy as np
import torch

from hierloc import LEVELS


@torch.no_grad()
def hierarchy_geometry(geometry, level_points: list[torch.Tensor], table, sample: int | None = None,
                       seed: int = 0, chunk: int = 4096) -> dict:
    rng = np.random.default_rng(seed)
    radius = [geometry.norm_from_origin(p.double()).float() for p in level_points]
    out = {"farther_than_parent": {}, "nearest_is_parent": {}, "mean_radius": {},
           "places": {}, "sample": sample}
    tot = np.zeros(3)
    for lv in range(4):
        out["mean_radius"][LEVELS[lv]] = round(float(radius[lv].mean()), 4)
    for lv in range(1, 4):
        sl, psl = table.level_slice(lv), table.level_slice(lv - 1)
        rows = np.arange(sl.stop - sl.start)
        if sample and sample < len(rows):
            rows = np.sort(rng.choice(len(rows), sample, replace=False))
        parent = torch.as_tensor(table.parent[sl][rows] - psl.start, dtype=torch.long)
        idx = torch.as_tensor(rows, dtype=torch.long)
        farther = (radius[lv][idx] > radius[lv - 1][parent]).double().sum().item()
        hits = 0
        for i in range(0, len(idx), chunk):
            d = geometry.sq_dist_matrix(level_points[lv][idx[i:i + chunk]], level_points[lv - 1])
            hits += int((d.argmin(1) == parent[i:i + chunk]).sum())
        n = len(idx)
        out["farther_than_parent"][LEVELS[lv]] = round(farther / n, 4)
        out["nearest_is_parent"][LEVELS[lv]] = round(hits / n, 4)
        out["places"][LEVELS[lv]] = n
        tot += (farther, hits, n)
    out["farther_than_parent"]["all"] = round(tot[0] / tot[2], 4)
    out["nearest_is_parent"]["all"] = round(tot[1] / tot[2], 4)
    return out


def describe(stats: dict) -> str:
    """One sentence for a person (the About text)."""
    f, n = stats["farther_than_parent"], stats["nearest_is_parent"]
    return (f"{100 * f['all']:.0f}% of the places lie further from the centre than their parent "
            f"(regions {100 * f['region']:.0f}%, sub-regions {100 * f['sub-region']:.0f}%, cities "
            f"{100 * f['city']:.0f}%), and for {100 * n['all']:.0f}% the nearest place one level up is their own "
            f"parent (regions {100 * n['region']:.0f}%, sub-regions {100 * n['sub-region']:.0f}%, cities "
            f"{100 * n['city']:.0f}%). " + _radii(stats["mean_radius"]))


def _radii(r: dict) -> str:
    levels = ("country", "region", "sub-region", "city")
    plural = {"country": "countries", "region": "regions", "sub-region": "sub-regions", "city": "cities"}
    text = "Mean distance from the centre: " + ", ".join(f"{plural[lv]} {r[lv]:.1f}" for lv in levels)
    if all(r[a] < r[b] for a, b in zip(levels, levels[1:])):
        return text + ": countries nearest the centre, cities furthest out."
    return (text + ": the levels are not ordered outward"
            + (" and, this far out, every place is drawn close to the rim." if min(r.values()) > 4 else "."))
