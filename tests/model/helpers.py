"""A tiny, hand-built hierarchy and model for tests."""

import numpy as np
import pandas as pd
import torch

from hierloc.geo.build import table_from_points
from hierloc.model.config import ModelConfig
from hierloc.model.hierloc import HierLoc, level_latlon


def tiny_places(n_countries=3, regions=2, subs=2, cities=3, seed=0):
    """A synthetic hierarchy with real structure: cities jittered around their region."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_countries):
        clat, clon = rng.uniform(-40, 50), rng.uniform(-150, 150)
        for r in range(regions):
            rlat, rlon = clat + rng.normal(0, 3), clon + rng.normal(0, 3)
            for s in range(subs):
                slat, slon = rlat + rng.normal(0, 1), rlon + rng.normal(0, 1)
                for k in range(cities):
                    rows.append((f"C{c}", f"R{c}{r}", f"S{c}{r}{s}", f"T{c}{r}{s}{k}",
                                 slat + rng.normal(0, 0.2), slon + rng.normal(0, 0.2)))
    pts = pd.DataFrame(rows, columns=["cc", "admin1", "admin2", "city", "lat_deg", "lon_deg"])
    return table_from_points(pts, source="tiny")


def tiny_model(table, feat_dim=16, **kw):
    kw.setdefault("embed_dim", 16)
    kw.setdefault("hidden_dim", 32)
    kw.setdefault("attn_heads", 4)
    kw.setdefault("dropout", 0.0)
    cfg = ModelConfig(feat_dim=feat_dim, num_places=tuple(table.counts().values()), **kw)
    feats = {}
    for name, dim in cfg.place_features:
        g = torch.Generator().manual_seed(7)
        feats[name] = [torch.randn(n, dim, generator=g) for n in cfg.num_places]
    return HierLoc(cfg, [torch.from_numpy(a) for a in level_latlon(table)], feats)


def targets_for(table, city_local):
    """(B,) local city indices -> (B, 4) local indices per level."""
    starts = [table.level_slice(lv).start for lv in range(4)]
    rows = np.asarray(city_local) + starts[3]
    return torch.tensor(np.stack([table.ancestor_at(rows, lv) - starts[lv] for lv in range(4)], 1))
