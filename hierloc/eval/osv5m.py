"""Evaluate a checkpoint on an OSV-5M split (features from a cache, extracted if needed)."""

from __future__ import annotations

import numpy as np

from hierloc import LEVELS
from hierloc.data.synthetic import PhotoSet


def osv5m_photos(root, split: str, features_dir, backbone_name: str, limit: int | None = None) -> PhotoSet:
    from hierloc.data.features import FeatureCache
    from hierloc.data.osv5m import OSV5M
    from hierloc.paths import cache_dir

    ds = OSV5M(root, split, limit=limit)
    cache = FeatureCache(features_dir or cache_dir() / "features" / backbone_name.replace(":", "_") / split)
    todo = set(ds.rows["id"]) - cache.done_ids()
    if todo:
        from hierloc.model.backbones import load_backbone

        cache.extract(load_backbone(backbone_name), ds.iter_photos(skip=cache.done_ids()), total=len(todo))
    ids, feats = cache.load()
    pos = {pid: i for i, pid in enumerate(ids)}
    rows = ds.rows[ds.rows["id"].isin(pos)]
    idx = np.array([pos[p] for p in rows["id"]], dtype=np.int64)
    keys = {lv: rows[f"unique_{lv}"].astype(str).to_numpy() for lv in LEVELS if f"unique_{lv}" in rows}
    names = {lv: rows[lv].astype(str).to_numpy() for lv in LEVELS if lv in rows}
    return PhotoSet(rows["id"].to_numpy(), feats[idx].float(), rows["latitude"].astype(float).to_numpy(),
                    rows["longitude"].astype(float).to_numpy(), keys, names)


def evaluate_osv5m(model, table, root, split="test", features_dir=None, beam=10, search="beam", limit=None) -> dict:
    from hierloc.eval.evaluate import evaluate_photos

    if not root:
        raise ValueError("--root DIR (a local OSV-5M copy) is needed to evaluate on OSV-5M")
    photos = osv5m_photos(root, split, features_dir, model.config.backbone or "efficientnet-lite0", limit)
    res = evaluate_photos(model, table, photos, beam=beam, search=search)
    res.update(split=split, search=search, beam=beam)
    return res
