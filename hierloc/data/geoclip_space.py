"""Training data in GeoCLIP's space: pseudo-photos drawn fresh at every step.

A photo is a location (where photos are taken) and a 512-d feature made from it by
GeoCLIP's pretrained location encoder with the benchmark's noise model
(hierloc.data.pseudo_photos, shared with the benchmark): u = normalise(loc(GPS') + s n), a share of the photos
encoded at a nearby GPS'. Each photo of a batch gets its own noise level, drawn
uniformly between 0 and ``noise_max`` times the calibrated one, so that a head trained
on them does not fit one level. Its ground truth is the benchmark's protocol (the
nearest GeoNames point and that point's parents).

Where photos are taken is itself a prior the model learns; two sources:
- ``cities``: population-weighted cities of the offline hierarchy, a few km of jitter;
- ``gallery``: GeoCLIP's 100k GPS gallery (where GeoCLIP's own training photos were
  taken), uniform, the same jitter.

Held out by cell: the globe is cut into ``CELL_DEG`` x ``CELL_DEG`` cells and a fixed
share of them (``HOLDOUT_SHARE``, chosen by a hash of the cell) is never drawn for
training; the benchmark's ``--split test`` draws its photos only there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.data.pseudo_photos import (  # noqa: F401 (shared with the benchmark)
    CALIBRATED, CELL_DEG, HOLDOUT_SHARE, SOURCES, LocationSource, cell_of, held_out, in_split, location_pool,
    location_unit, noisy_features)

log = logging.getLogger(__name__)


@dataclass
class Batch:
    feats: torch.Tensor     # (B, 512)
    targets: torch.Tensor   # (B, 4) local index per level
    latlon: torch.Tensor    # (B, 2) degrees


class GeoClipPhotos:
    """Fresh pseudo-photos of one split, with their ground truth in a place table."""

    def __init__(self, table, where: str = "cities", split: str = "train", noise_max: float = 1.5,
                 noise=None, encoder=None):
        from hierloc.data.place_features import load_geoclip_location_encoder
        from hierloc.geo.reverse import ReverseGeocoder

        self.table = table
        self.source = LocationSource(where, split, table)
        self.noise = noise or CALIBRATED
        self.noise_max = float(noise_max)
        self.encoder = encoder or load_geoclip_location_encoder()
        self.rg = ReverseGeocoder(table, "benchmark")
        self.starts = np.array([table.level_slice(lv).start for lv in range(len(LEVELS))])

    def targets(self, lat_deg, lon_deg) -> np.ndarray:
        """(N, 4) local index of the true place per level (the benchmark's protocol)."""
        rows = self.rg.lookup(lat_deg, lon_deg)
        return np.stack([self.table.ancestor_at(rows, lv) - self.starts[lv] for lv in range(len(LEVELS))], 1)

    def batch(self, n: int, rng: np.random.Generator, level: float | None = None) -> Batch:
        """n photos; each at a noise level drawn in [0, noise_max] (or all at ``level``)."""
        lat, lon = self.source.draw(n, rng)
        levels = rng.uniform(0.0, self.noise_max, n) if level is None else np.full(n, float(level))
        feats = noisy_features(self.encoder, lat, lon, levels, self.noise, rng)
        return Batch(feats, torch.from_numpy(self.targets(lat, lon)).long(),
                     torch.as_tensor(np.stack([lat, lon], 1), dtype=torch.float32))

    def photo_set(self, n: int, seed: int, level: float = 1.0):
        """A fixed PhotoSet (features at one noise level, keys) for validation."""
        from hierloc.data.synthetic import PhotoSet

        rng = np.random.default_rng(seed)
        b = self.batch(n, rng, level)
        tg = b.targets.numpy()
        keys = {lv: self.table.key[self.table.level_slice(i)][tg[:, i]].astype(str) for i, lv in enumerate(LEVELS)}
        lat, lon = b.latlon[:, 0].double().numpy(), b.latlon[:, 1].double().numpy()
        return PhotoSet(np.arange(n), b.feats, lat, lon, keys, {lv: keys[lv] for lv in LEVELS})


def mean_location_features(table, where: str, n: int = 200_000, seed: int = 0, encoder=None) -> list[torch.Tensor]:
    """The paper's mean-photo place feature in GeoCLIP's space: the mean unit location
    feature of n noise-free training locations drawn from ``where`` (train split) and of
    every city's own centre (so that no city is without one), per place. Cached."""
    from safetensors.torch import load_file, save_file

    from hierloc.paths import cache_dir

    cache = cache_dir() / "location" / f"mean-{table.content_hash()[:16]}-{where}-{n}-{seed}.safetensors"
    if cache.exists():
        raw = load_file(str(cache))
        return [raw[f"level_{lv}"] for lv in range(len(LEVELS))]
    out = _mean_location_features(table, where, n, seed, encoder)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    save_file({f"level_{lv}": f.contiguous() for lv, f in enumerate(out)}, str(tmp))
    tmp.replace(cache)
    return out


def _mean_location_features(table, where: str, n: int, seed: int, encoder=None) -> list[torch.Tensor]:
    from hierloc.data.place_features import load_geoclip_location_encoder, mean_image_features
    from hierloc.geo.reverse import ReverseGeocoder

    rng = np.random.default_rng(seed)
    lat, lon = LocationSource(where, "train", table).draw(n, rng)
    city = table.level_slice("city")
    lat = np.concatenate([lat, table.lat_deg[city]])
    lon = np.concatenate([lon, table.lon_deg[city]])
    feats = location_unit(encoder or load_geoclip_location_encoder(), lat, lon)
    rows = np.concatenate([ReverseGeocoder(table, "benchmark").lookup(lat[:n], lon[:n]), np.arange(city.start, city.stop)])
    return mean_image_features(table, rows, feats)
