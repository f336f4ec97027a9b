"""A cache of frozen-backbone features: sharded float16 safetensors files, resumable.

    FOLDER/manifest.json         backbone, feature size, finished shards, failed ids
    FOLDER/shard-00000.safetensors  {"features": (n, F) float16}, metadata "ids"

A shard is written to a temporary file and renamed, then the manifest is rewritten the
same way, so an interrupted extraction loses at most the shard in progress; running it
again skips every id already in a finished shard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


class FeatureCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest_path = self.folder / "manifest.json"

    def manifest(self) -> dict:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return {"backbone": None, "feat_dim": None, "shards": [], "failed": {}}

    def done_ids(self) -> set[str]:
        ids: set[str] = set()
        for shard in self.manifest()["shards"]:
            ids.update(shard["ids"])
        return ids

    def extract(self, backbone, photos: Iterable, total: int | None = None, shard_size: int = 4096,
                batch_size: int = 64) -> dict:
        """Encode photos (objects with .id, .image, .error) not yet cached; returns the manifest."""
        from safetensors.torch import save_file
        from tqdm import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        man = self.manifest()
        if man["backbone"] not in (None, backbone.name):
            raise ValueError(f"{self.folder} holds features of {man['backbone']}, not {backbone.name}: "
                             "use another folder")
        man["backbone"], man["feat_dim"] = backbone.name, backbone.feat_dim
        pending_ids, pending_imgs, shard_ids, shard_feats = [], [], [], []

        def flush_batch():
            if pending_imgs:
                shard_feats.append(backbone.encode_images(pending_imgs, batch_size).half())
                shard_ids.extend(pending_ids)
                pending_ids.clear()
                pending_imgs.clear()

        def flush_shard():
            flush_batch()
            if not shard_ids:
                return
            name = f"shard-{len(man['shards']):05d}.safetensors"
            tmp = self.folder / (name + ".tmp")
            save_file({"features": torch.cat(shard_feats)}, str(tmp), metadata={"ids": "\n".join(shard_ids)})
            tmp.replace(self.folder / name)
            man["shards"].append({"file": name, "ids": list(shard_ids)})
            _atomic_write_text(self.manifest_path, json.dumps(man))
            shard_ids.clear()
            shard_feats.clear()

        with tqdm(total=total, desc="features", unit="photo", dynamic_ncols=True) as bar:
            for photo in photos:
                bar.update(1)
                if photo.image is None:
                    man["failed"][photo.id] = photo.error
                    continue
                pending_ids.append(photo.id)
                pending_imgs.append(photo.image)
                if len(pending_imgs) >= batch_size:
                    flush_batch()
                if len(shard_ids) + len(pending_ids) >= shard_size:
                    flush_shard()
            flush_shard()
        _atomic_write_text(self.manifest_path, json.dumps(man))
        return man

    def load(self) -> tuple[list[str], torch.Tensor]:
        """All cached (ids, features (N, F) float16)."""
        from safetensors import safe_open

        ids, feats = [], []
        for shard in self.manifest()["shards"]:
            with safe_open(str(self.folder / shard["file"]), "pt") as f:
                ids.extend(f.metadata()["ids"].split("\n"))
                feats.append(f.get_tensor("features"))
        if not feats:
            raise FileNotFoundError(f"no cached features in {self.folder}")
        return ids, torch.cat(feats)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("shard-*.safetensors"))
