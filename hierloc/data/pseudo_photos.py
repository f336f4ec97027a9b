"""Pseudo-photos in GeoCLIP's space: the noise model, the location pools and the held-out
cells that GeoCLIP-space training (hierloc.data.geoclip_space) and the GeoCLIP-space
benchmark (hierloc.eval.geoclip_bench) share. Both import this module; neither imports
the other.

GeoCLIP trains its image head so that a photo's feature points the way of its location
encoder's output for the photo's GPS; a pseudo-photo is that feature, blurred:

    u = normalise( loc(GPS') / |loc(GPS')| + s * n ),   n ~ N(0, I / 512)

with two kinds of blur (:class:`NoiseModel`): isotropic (``s``), and a share ``q`` of the
photos encoded at GPS' = the true GPS moved a log-normal distance in a random direction
(places that look alike are mostly near one another). ``CALIBRATED`` reproduces GeoCLIP's
published Im2GPS3k accuracy with GeoCLIP's own decoder (README).

Where photos are taken (:func:`location_pool`): population-weighted cities of the offline
hierarchy, or GeoCLIP's 100k GPS gallery (uniform), with a few km of jitter. Held out by
cell (:func:`held_out`): a fixed hash of each ``CELL_DEG`` cell sends ``HOLDOUT_SHARE`` of
them to the test side, never drawn for training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from hierloc.data.synthetic import jitter

log = logging.getLogger(__name__)


FEATURE_DIM = 512


@dataclass(frozen=True)
class NoiseModel:
    """How a photo's GeoCLIP feature strays from loc(true GPS) (see the module docstring)."""

    isotropic: float = 3.5            # s: norm of the added Gaussian vector, relative to 1
    share_displaced: float = 0.35     # q: share of photos that look like somewhere near
    displace_median_km: float = 300.0
    displace_sigma: float = 1.0       # log-normal spread of the displacement

    def __post_init__(self):
        if self.isotropic < 0 or not 0 <= self.share_displaced <= 1 or self.displace_median_km <= 0:
            raise ValueError(f"invalid noise model {self}")

    def at(self, level: float) -> "NoiseModel":
        """This model scaled by ``level`` (0: no noise; 1: as calibrated)."""
        return replace(self, isotropic=self.isotropic * level,
                       share_displaced=min(1.0, self.share_displaced * level))


CALIBRATED = NoiseModel()
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
        lat_out, lon_out, have = [], [], 0
        while have < n:
            pick = rng.choice(len(self.lat), size=max(16, int(1.2 * (n - have))), p=self.p)
            lat, lon = jitter(self.lat[pick], self.lon[pick], self.jitter_km, rng)
            ok = in_split(lat, lon, self.split)
            lat_out.append(lat[ok])
            lon_out.append(lon[ok])
            have += int(ok.sum())
        return np.concatenate(lat_out)[:n], np.concatenate(lon_out)[:n]


def sample_locations(n: int, where: str = "cities", seed: int = 0, jitter_km: float = 3.0, table=None,
                     split: str = "all"):
    """(lat_deg, lon_deg) of n photos: 'cities' (population-weighted cities of the
    offline hierarchy) or 'gallery' (GeoCLIP's 100k GPS gallery, uniform), jittered;
    split 'test': only in the cells GeoCLIP-space training holds out."""
    rng = np.random.default_rng(seed)
    if split != "all":
        return LocationSource(where, split, table, jitter_km).draw(n, rng)
    if where not in SOURCES:
        raise ValueError(f"unknown photo locations {where!r}: expected 'cities', 'gallery' or a CSV file")
    lat, lon, weight = location_pool(where, table)
    if where == "cities":
        pick = rng.choice(len(lat), size=n, p=weight / weight.sum())
    else:
        pick = rng.choice(len(lat), size=n, replace=n > len(lat))
    return jitter(lat[pick], lon[pick], jitter_km, rng)


def read_locations(path) -> tuple[np.ndarray, np.ndarray]:
    """A CSV with latitude/longitude columns (also lat/lon, LAT/LON) -> degrees."""
    import pandas as pd

    df = pd.read_csv(path)
    cols = {c.lower(): c for c in df.columns}
    for la, lo in (("latitude", "longitude"), ("lat", "lon"), ("lat", "lng")):
        if la in cols and lo in cols:
            lat = pd.to_numeric(df[cols[la]], errors="coerce").to_numpy(dtype=np.float64)
            lon = pd.to_numeric(df[cols[lo]], errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
            if not ok.any():
                raise ValueError(f"{path}: no valid latitude/longitude rows")
            if not ok.all():
                log.warning("%s: %d rows without a valid latitude/longitude left out", path, int((~ok).sum()))
            return lat[ok], lon[ok]
    raise ValueError(f"{path} needs latitude and longitude columns (or lat/lon), found {list(df.columns)}")


def displace(lat_deg, lon_deg, dist_km, bearing_rad) -> tuple[np.ndarray, np.ndarray]:
    """Move points along great circles: the destination of each start, distance, bearing."""
    R = 6371.0
    la, lo, d = np.radians(lat_deg), np.radians(lon_deg), np.asarray(dist_km) / R
    la2 = np.arcsin(np.sin(la) * np.cos(d) + np.cos(la) * np.sin(d) * np.cos(bearing_rad))
    lo2 = lo + np.arctan2(np.sin(bearing_rad) * np.sin(d) * np.cos(la), np.cos(d) - np.sin(la) * np.sin(la2))
    return np.degrees(la2), ((np.degrees(lo2) + 180.0) % 360.0) - 180.0


def displace_some(lat_deg, lon_deg, share, noise: NoiseModel, rng) -> tuple[np.ndarray, np.ndarray]:
    """The noise model's structured blur: each point, with probability ``share`` (one value
    or one per point), moved a log-normal distance in a random direction; copies."""
    lat, lon = np.array(lat_deg, dtype=np.float64), np.array(lon_deg, dtype=np.float64)
    moved = rng.random(len(lat)) < share
    k = int(moved.sum())
    if k:
        dist = np.exp(np.log(noise.displace_median_km) + noise.displace_sigma * rng.standard_normal(k))
        lat[moved], lon[moved] = displace(lat[moved], lon[moved], dist, rng.uniform(0, 2 * np.pi, k))
    return lat, lon


@torch.inference_mode()
def location_unit(encoder, lat_deg, lon_deg, batch: int = 8192) -> torch.Tensor:
    """Unit GeoCLIP location features: (N,) degrees -> (N, 512)."""
    ll = torch.as_tensor(np.stack([lat_deg, lon_deg], 1), dtype=torch.float32)
    f = torch.cat([encoder(ll[i:i + batch]) for i in range(0, len(ll), batch)])
    return torch.nn.functional.normalize(f, dim=-1)


def photo_features(encoder, lat_deg, lon_deg, noise: NoiseModel, seed: int = 0) -> torch.Tensor:
    """Pseudo-photo features (N, 512) for photos taken at (lat_deg, lon_deg)."""
    rng = np.random.default_rng(seed)
    lat, lon = displace_some(lat_deg, lon_deg, noise.share_displaced, noise, rng)
    w = location_unit(encoder, lat, lon)
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(w.shape, generator=g) / FEATURE_DIM ** 0.5  # (N, 512), norm ~ 1
    return torch.nn.functional.normalize(w + noise.isotropic * gauss, dim=-1)


def noisy_features(encoder, lat_deg, lon_deg, levels, noise, rng: np.random.Generator) -> torch.Tensor:
    """Pseudo-photo features (N, 512), photo i at noise ``levels[i]`` x ``noise``."""
    levels = np.broadcast_to(np.asarray(levels, dtype=np.float64), (len(lat_deg),))
    lat, lon = displace_some(lat_deg, lon_deg, np.minimum(1.0, noise.share_displaced * levels), noise, rng)
    w = location_unit(encoder, lat, lon)
    gauss = torch.from_numpy(rng.standard_normal(w.shape).astype(np.float32)) / FEATURE_DIM ** 0.5
    s = torch.as_tensor(noise.isotropic * levels, dtype=torch.float32)[:, None]
    return torch.nn.functional.normalize(w + s * gauss, dim=-1)
