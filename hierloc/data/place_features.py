"""Per-place input features (the paper's Algorithm 1), each cached on disk.

- image: the mean backbone feature of the training photos of each place; a place with
  no photo takes its parent's mean (and a country with none, the global mean);
- text: the backbone's text-tower feature of "City, Region, Country" ("Sub-region,
  Region, Country", "Region, Country", "Country" above; empty names left out), for
  backbones with a text tower;
- location: GeoCLIP's pretrained location encoder (shipped in the geoclip wheel, MIT)
  applied to each place's centroid: 512-d.

Each function returns a list of 4 tensors (N_l, dim), one per level.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hierloc.geo.places import PlaceTable

log = logging.getLogger(__name__)
NUM_LEVELS = 4


def mean_image_features(table: PlaceTable, city_rows: np.ndarray, feats: torch.Tensor) -> list[torch.Tensor]:
    """city_rows (N,) table rows of each photo's city; feats (N, F) -> per level (N_l, F)."""
    feats = feats.float()
    F = feats.shape[1]
    out: list[torch.Tensor | None] = [None] * NUM_LEVELS
    counts_by_level = []
    for lv in range(NUM_LEVELS):
        sl = table.level_slice(lv)
        local = torch.as_tensor(table.ancestor_at(city_rows, lv) - sl.start, dtype=torch.long)
        n = sl.stop - sl.start
        sums = torch.zeros(n, F).index_add_(0, local, feats)
        counts = torch.bincount(local, minlength=n).float()
        out[lv] = sums / counts.clamp_min(1)[:, None]
        counts_by_level.append(counts)
    global_mean = feats.mean(0)
    for lv in range(NUM_LEVELS):  # back off to the parent (already filled) where no photo
        empty = counts_by_level[lv] == 0
        if not empty.any():
            continue
        if lv == 0:
            out[0][empty] = global_mean
        else:
            sl, psl = table.level_slice(lv), table.level_slice(lv - 1)
            parent_local = torch.as_tensor(table.parent[sl] - psl.start, dtype=torch.long)
            out[lv][empty] = out[lv - 1][parent_local[empty]]
    return out


def place_texts(table: PlaceTable) -> list[list[str]]:
    """"City, Region, Country" per place, per level (empty names left out)."""
    texts = []
    for lv in range(NUM_LEVELS):
        sl = table.level_slice(lv)
        level_texts = []
        for row in range(sl.start, sl.stop):
            chain = table.ancestors(row)
            if lv == NUM_LEVELS - 1:  # a city reads "City, Region, Country" (the paper's form)
                chain = [r for r in chain if int(table.level[r]) != 2]
            names = [str(table.name[r]) for r in chain if table.name[r]]
            level_texts.append(", ".join(reversed(names)) or str(table.key[row]))
        texts.append(level_texts)
    return texts


def text_features(table: PlaceTable, backbone, cache: Path | None = None) -> list[torch.Tensor]:
    """Text-tower features of "City, Region, Country", cached by backbone and table hash."""
    from safetensors.torch import load_file, save_file

    from hierloc.paths import cache_dir

    name = backbone.name.replace(":", "_").replace("/", "_")
    cache = cache or cache_dir() / "text" / name / f"{table.content_hash()[:16]}.safetensors"
    if cache.exists():
        raw = load_file(str(cache))
        return [raw[f"level_{lv}"].float() for lv in range(NUM_LEVELS)]
    per_level = [backbone.encode_text(t) for t in place_texts(table)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({f"level_{lv}": f.half().contiguous() for lv, f in enumerate(per_level)}, str(tmp))
    tmp.replace(cache)
    return [f.half().float() for f in per_level]


def load_geoclip_location_encoder():
    """GeoCLIP's pretrained location encoder from the geoclip wheel (weights_only load)."""
    from geoclip.model.location_encoder import LocationEncoder

    return LocationEncoder(from_pretrained=True).eval()


@torch.inference_mode()
def location_features(table: PlaceTable, cache: Path | None = None, batch: int = 8192) -> list[torch.Tensor]:
    """GeoCLIP location features of every place centroid, cached by the table's hash."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from hierloc.paths import cache_dir

    cache = cache or cache_dir() / "location" / f"{table.content_hash()[:16]}.safetensors"
    if cache.exists():
        raw = load_file(str(cache))
        return [raw[f"level_{lv}"].float() for lv in range(NUM_LEVELS)]
    enc = load_geoclip_location_encoder()
    latlon = torch.as_tensor(np.stack([table.lat_deg, table.lon_deg], 1), dtype=torch.float32)
    out = []
    for i in tqdm(range(0, len(latlon), batch), desc="GeoCLIP location features", unit="batch"):
        out.append(enc(latlon[i:i + batch]))
    allf = torch.cat(out)
    per_level = [allf[table.level_slice(lv)] for lv in range(NUM_LEVELS)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({f"level_{lv}": f.half().contiguous() for lv, f in enumerate(per_level)}, str(tmp))
    tmp.replace(cache)
    return [f.half().float() for f in per_level]  # the same values a cache hit gives
