"""GeoSynth: a synthetic geolocation benchmark that runs anywhere, deterministic by seed.

Photo locations are drawn from the real offline hierarchy: a city with probability
proportional to its population (GeoNames; 1,000 where unknown), then a point a few km
around it. Each photo's feature, in the backbone's feature space (its dimension), is a
smooth function of where it was taken plus noise:

    f = a_c U_country + a_r U_region + a_s U_subregion + a_t U_city
        + a_g G(lat, lon) + a_n noise

U_* are fixed random unit-scale vectors per place (seeded by the place key), G is a
smooth random field on the sphere (random Fourier features of the 3-D position,
projected to the feature space), noise is i.i.d. Gaussian. Coarse levels carry the most
signal, so, like real photos, a country is easier to tell than a city.

Train and test are split by location: the globe is cut into 0.1-degree cells and every
cell goes wholly to train or to test, so no test photo shares a place-cell with a
training photo (the cities themselves may appear on both sides, as in OSV-5M).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.geo.distance import unit_vectors


@dataclass(frozen=True)
class GeoSynthConfig:
    n_photos: int = 40_000           # train + test
    test_fraction: float = 0.15      # share of location cells held out for test
    feat_dim: int = 1280             # EfficientNet-Lite0's feature size
    seed: int = 0
    countries: tuple = ()            # ISO codes to keep (empty: the whole world)
    jitter_km: float = 3.0           # spread of photos around their city
    weights: tuple = (1.0, 0.8, 0.6, 0.5)   # a_c, a_r, a_s, a_t
    smooth: float = 0.7              # a_g
    noise: float = 8.0               # a_n (tuned so nearest-centroid is near OSV-5M baselines)
    cell_deg: float = 0.1            # split granularity

    def __post_init__(self):
        if self.n_photos < 10 or not 0 < self.test_fraction < 1 or self.feat_dim < 4:
            raise ValueError("GeoSynth needs n_photos >= 10, 0 < test_fraction < 1 and feat_dim >= 4")
        object.__setattr__(self, "countries", tuple(self.countries))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PhotoSet:
    """Photos with features and ground truth: ids (N,), feats (N, F) float32, lat_deg,
    lon_deg (N,), keys {level: (N,) str}, names {level: (N,) str} (display names)."""

    ids: np.ndarray
    feats: torch.Tensor
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    keys: dict
    names: dict

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "PhotoSet":
        idx = np.asarray(idx)
        return PhotoSet(self.ids[idx], self.feats[torch.as_tensor(idx)], self.lat_deg[idx], self.lon_deg[idx],
                        {k: v[idx] for k, v in self.keys.items()}, {k: v[idx] for k, v in self.names.items()})

    def points_frame(self):
        """The frame hierloc.geo.build.table_from_points takes (names + coordinates) and keys."""
        import pandas as pd

        pts = pd.DataFrame({"cc": self.keys["country"], "admin1": self.names["region"],
                            "admin2": self.names["sub-region"], "city": self.names["city"],
                            "lat_deg": self.lat_deg, "lon_deg": self.lon_deg})
        keys = pd.DataFrame({f"k{i}": self.keys[lv] for i, lv in enumerate(LEVELS)})
        return pts, keys


def _key_vectors(keys: np.ndarray, dim: int, seed: int, level: int) -> np.ndarray:
    """A fixed N(0, 1/dim) vector per distinct key (seeded by the key text): (N, dim)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    out = np.empty((len(uniq), dim), dtype=np.float32)
    for i, k in enumerate(uniq):
        digest = hashlib.sha256(f"{seed}|{level}|{k}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        out[i] = rng.standard_normal(dim).astype(np.float32)
    return out[inv] / np.sqrt(dim) * np.sqrt(dim / 64.0)


def jitter(lat_deg, lon_deg, jitter_km: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Points moved a few km (|N(0, jitter_km)|) in a random direction: (N,) x2 degrees."""
    n = len(lat_deg)
    ang = rng.uniform(0, 2 * np.pi, n)
    r_km = np.abs(rng.normal(0, jitter_km, n))
    lat = np.clip(lat_deg + r_km * np.cos(ang) / 111.0, -89.9, 89.9)
    lon = lon_deg + r_km * np.sin(ang) / (111.0 * np.cos(np.radians(lat)))
    return lat, ((lon + 180.0) % 360.0) - 180.0


def make_geosynth(cfg: GeoSynthConfig, places=None) -> tuple[PhotoSet, PhotoSet]:
    """(train, test) photo sets; deterministic for a given config."""
    from hierloc.geo.places import default_places

    places = places or default_places()
    rng = np.random.default_rng(cfg.seed)
    city = places.level_slice("city")
    rows = np.arange(city.start, city.stop)
    if cfg.countries:
        rows = rows[np.isin(places.country_code[rows], list(cfg.countries))]
        if len(rows) == 0:
            raise ValueError(f"no cities in countries {cfg.countries}")
    pop = np.nan_to_num(places.population[rows], nan=1000.0).clip(min=1000.0)
    pick = rows[rng.choice(len(rows), size=cfg.n_photos, p=pop / pop.sum())]
    lat, lon = jitter(places.lat_deg[pick], places.lon_deg[pick], cfg.jitter_km, rng)

    keys, names = {}, {}
    for lv, level in enumerate(LEVELS):
        anc = places.ancestor_at(pick, lv)
        keys[level] = places.key[anc].astype(str)
        names[level] = places.name[anc].astype(str)
    feats = np.zeros((cfg.n_photos, cfg.feat_dim), dtype=np.float32)
    for lv, level in enumerate(LEVELS):
        feats += cfg.weights[lv] * _key_vectors(keys[level], cfg.feat_dim, cfg.seed, lv)
    # smooth field: random Fourier features of the 3-D position, projected
    field_rng = np.random.default_rng(cfg.seed + 1)
    freq = field_rng.normal(0, 4.0, (3, 64))
    phase = field_rng.uniform(0, 2 * np.pi, 64)
    proj = field_rng.standard_normal((64, cfg.feat_dim)).astype(np.float32) / 8.0
    xyz = unit_vectors(lat, lon)
    feats += cfg.smooth * (np.cos(xyz @ freq + phase).astype(np.float32) @ proj) * np.sqrt(cfg.feat_dim / 64.0) / np.sqrt(cfg.feat_dim)
    feats += cfg.noise * rng.standard_normal(feats.shape).astype(np.float32) / np.sqrt(64.0)

    cells = (np.floor(lat / cfg.cell_deg).astype(np.int64) * 10_000 + np.floor(lon / cfg.cell_deg).astype(np.int64))
    uniq = np.unique(cells)
    test_cells = uniq[np.random.default_rng(cfg.seed + 2).random(len(uniq)) < cfg.test_fraction]
    is_test = np.isin(cells, test_cells)
    ids = np.array([f"synth-{cfg.seed}-{i:07d}" for i in range(cfg.n_photos)])
    full = PhotoSet(ids, torch.from_numpy(feats), lat, lon, keys, names)
    return full.subset(np.flatnonzero(~is_test)), full.subset(np.flatnonzero(is_test))
