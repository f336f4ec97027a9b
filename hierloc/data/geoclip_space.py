"""Training data in GeoCLIP's space: pseudo-photos drawn fresh at every step.

A photo is a location (where photos are taken) and a 512-d feature made from it by
GeoCLIP's pretrained location encoder with the benchmark's noise model
(hierloc.eval.geoclip_bench): u = normalise(loc(GPS') + s n), a share of the photos
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

log = logging.getLogger(__name__)

CELL_DEG = 1.0
HOLDOUT_SHARE = 0.1
SOURCES = ("cities", "gallery")


def cell_of(lat_deg, lon_deg, cell_deg: float = CELL_DEG) -> np.ndarray:
    """Integer id of the lat/lon cell of each point: (N,) -> (N,) int64."""
    i = np.floor((np.asarray(lat_deg, dtype=np.float64) + 90.0) / cell_deg).astype(np.int64)
    j = np.floor((np.asarray(lon_deg, dtype=np.float64) + 180.0) / cell_deg).astype(np.int64)
    return i * 100_000 + j


def held_out(lat_deg, lon_deg, share: float = HOLDOUT_SHARE, cell_deg: float = CELL_DEG) -> np.ndarray:
    """True where a point lies in a held-out (test) cell: a fixed hash of the cell id
    (splitmix64), so the split never depends on the data or a seed."""
    x = cell_of(lat_deg, lon_deg, cell_deg).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2 ** 53) < share


def in_split(lat_deg, lon_deg, split: str) -> np.ndarray:
    if split == "all":
        return np.ones(len(np.asarray(lat_deg)), dtype=bool)
    test = held_out(lat_deg, lon_deg)
    if split == "test":
        return test
    if split == "train":
        return ~test
    raise ValueError(f"split must be all, train or test, got {split!r}")


def location_pool(where: str, table=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points photos are drawn around, and their weights: every city of the offline
    hierarchy weighted by population (at least 1,000), or GeoCLIP's gallery, uniform."""
    if where not in SOURCES:
        raise ValueError(f"unknown photo locations {where!r}: expected one of {SOURCES}")
    if where == "cities":
        from hierloc.geo.places import default_places

        table = table or default_places()
        city = table.level_slice("city")
        pop = np.nan_to_num(table.population[city], nan=1000.0).clip(min=1000.0)
        return table.lat_deg[city], table.lon_deg[city], pop
    from hierloc.infer.zeroshot import gallery_latlon

    g = gallery_latlon()
    return g[:, 0], g[:, 1], np.ones(len(g))


class LocationSource:
    """Where photos are taken: draws jittered locations of one split."""

    def __init__(self, where: str = "cities", split: str = "train", table=None, jitter_km: float = 3.0):
        self.where, self.split, self.jitter_km = where, split, jitter_km
        lat, lon, weight = location_pool(where, table)
        keep = in_split(lat, lon, split)  # the point itself; jittered draws are checked again
        if not keep.any():
            raise ValueError(f"no {where} location falls in the {split} split")
        self.lat, self.lon = lat[keep], lon[keep]
        self.p = weight[keep] / weight[keep].sum()

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from hierloc.data.synthetic import jitter

        lat_out, lon_out, have = [], [], 0
        while have < n:
            pick = rng.choice(len(self.lat), size=max(16, int(1.2 * (n - have))), p=self.p)
            lat, lon = jitter(self.lat[pick], self.lon[pick], self.jitter_km, rng)
            ok = in_split(lat, lon, self.split)
            lat_out.append(lat[ok])
            lon_out.append(lon[ok])
            have += int(ok.sum())
        return np.concatenate(lat_out)[:n], np.concatenate(lon_out)[:n]


def noisy_features(encoder, lat_deg, lon_deg, levels, noise, rng: np.random.Generator) -> torch.Tensor:
    """Pseudo-photo features (N, 512), photo i at noise ``levels[i]`` x ``noise``."""
    from hierloc.eval.geoclip_bench import FEATURE_DIM, displace_some, location_unit

    levels = np.broadcast_to(np.asarray(levels, dtype=np.float64), (len(lat_deg),))
    lat, lon = displace_some(lat_deg, lon_deg, np.minimum(1.0, noise.share_displaced * levels), noise, rng)
    w = location_unit(encoder, lat, lon)
    gauss = torch.from_numpy(rng.standard_normal(w.shape).astype(np.float32)) / FEATURE_DIM ** 0.5
    s = torch.as_tensor(noise.isotropic * levels, dtype=torch.float32)[:, None]
    return torch.nn.functional.normalize(w + s * gauss, dim=-1)


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
        from hierloc.eval.geoclip_bench import CALIBRATED
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
    from hierloc.eval.geoclip_bench import location_unit
    from hierloc.geo.reverse import ReverseGeocoder

    rng = np.random.default_rng(seed)
    lat, lon = LocationSource(where, "train", table).draw(n, rng)
    city = table.level_slice("city")
    lat = np.concatenate([lat, table.lat_deg[city]])
    lon = np.concatenate([lon, table.lon_deg[city]])
    feats = location_unit(encoder or load_geoclip_location_encoder(), lat, lon)
    rows = np.concatenate([ReverseGeocoder(table, "benchmark").lookup(lat[:n], lon[:n]), np.arange(city.start, city.stop)])
    return mean_image_features(table, rows, feats)
