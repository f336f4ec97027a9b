"""The place hierarchy: one schema for every source.

A :class:`PlaceTable` holds every place of the four levels (country -> region ->
sub-region -> city) as parallel numpy arrays, sorted by level then key, so that each
level is one contiguous slice and a level's rows can be used directly as the rows of
an embedding table.

Keys follow the OSV-5M convention (METHOD.md section 4)::

    country     "{cc}"                              "NZ"
    region      "{admin1}_{cc}"                     "Chatham Islands_NZ"
    sub-region  "{admin2}_{admin1}_{cc}"            "NaN_Chatham Islands_NZ"
    city        "{name}_{admin2}_{admin1}_{cc}"     "Waitangi_NaN_Chatham Islands_NZ"

An empty part is kept and spelled ``NaN``, as pandas writes a missing value when the
benchmark's keys are concatenated. Such a place exists in the tree (so every city has a
region and a country) but has an empty display ``name``; evaluation skips a level whose
ground-truth name is empty.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc import LEVELS

log = logging.getLogger(__name__)

EMPTY_PART = "NaN"
"""How an empty admin name is spelled inside a key (the benchmark's convention)."""

SCHEMA_VERSION = 1
COLUMNS = (
    "key", "level", "parent", "name", "country_code", "lat_deg", "lon_deg",
    "population", "n_points", "admin_code", "boundary",
)


def key_part(value) -> str:
    """One component of a key: the value, or ``NaN`` when it is missing or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return EMPTY_PART
    text = str(value)
    return text if text else EMPTY_PART


def place_keys(cc, admin1, admin2, city) -> tuple[str, str, str, str]:
    """The four OSV-5M keys of one point: (country, region, sub-region, city)."""
    c, a1, a2, n = (key_part(v) for v in (cc, admin1, admin2, city))
    return c, f"{a1}_{c}", f"{a2}_{a1}_{c}", f"{n}_{a2}_{a1}_{c}"


def level_index(level: int | str) -> int:
    """Level name or number -> 0..3 (country, region, sub-region, city)."""
    if isinstance(level, str):
        try:
            return LEVELS.index(level)
        except ValueError:
            raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}") from None
    if not 0 <= int(level) < len(LEVELS):
        raise ValueError(f"level {level} is out of range 0..{len(LEVELS) - 1}")
    return int(level)


def country_flag(cc: str) -> str:
    """ISO 3166-1 alpha-2 code -> flag emoji ('' for codes that are not two letters)."""
    if len(cc) != 2 or not cc.isalpha():
        return ""
    return "".join(chr(0x1F1E6 + ord(ch) - ord("A")) for ch in cc.upper())


def _as_tuples(col: pd.Series) -> np.ndarray:
    out = np.empty(len(col), dtype=object)
    out[:] = [tuple(int(v) for v in x) if x is not None and len(x) else () for x in col]
    return out


@dataclass(frozen=True, eq=False)
class PlaceTable:
    """Every place of the hierarchy as parallel arrays of length P (sorted by level, key).

    Arrays: key (str), level (int8, 0..3), parent (int32 row of the parent, -1 for a
    country), name (display name, '' when the source has none), country_code (ISO
    alpha-2), lat_deg / lon_deg (float64 centroid: mean of the member points),
    population (float64, NaN when unknown), n_points (int32, member points the centroid
    averages), admin_code (GeoNames admin code such as 'FR.93' where known, else ''),
    boundary (tuple of int rows in the boundary table of the level: the country
    outline for a country, the Natural Earth admin-1 units that make up a region; empty
    when none is linked; sub-regions and cities have none, see geo.boundaries).
    """

    key: np.ndarray
    level: np.ndarray
    parent: np.ndarray
    name: np.ndarray
    country_code: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    population: np.ndarray
    n_points: np.ndarray
    admin_code: np.ndarray
    boundary: np.ndarray
    source: str = "unknown"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.key)
        for col in COLUMNS:
            if len(getattr(self, col)) != n:
                raise ValueError(f"column {col!r} has {len(getattr(self, col))} rows, expected {n}")
        if n and np.any(np.diff(self.level.astype(np.int64)) < 0):
            raise ValueError("places must be sorted by level")

    # ---- construction and storage -------------------------------------------------
    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "unknown") -> "PlaceTable":
        """Build from a DataFrame with the columns of :data:`COLUMNS`."""
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"place table lacks columns {missing}")
        return cls(
            key=df["key"].to_numpy(dtype=object),
            level=df["level"].to_numpy(dtype=np.int8),
            parent=df["parent"].to_numpy(dtype=np.int32),
            name=df["name"].fillna("").to_numpy(dtype=object),
            country_code=df["country_code"].fillna("").to_numpy(dtype=object),
            lat_deg=df["lat_deg"].to_numpy(dtype=np.float64),
            lon_deg=df["lon_deg"].to_numpy(dtype=np.float64),
            population=df["population"].to_numpy(dtype=np.float64),
            n_points=df["n_points"].to_numpy(dtype=np.int32),
            admin_code=df["admin_code"].fillna("").to_numpy(dtype=object),
            boundary=_as_tuples(df["boundary"]),
            source=source,
        )

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({c: getattr(self, c) for c in COLUMNS})
        df["boundary"] = [list(b) for b in self.boundary]
        return df

    def replace(self, **columns) -> "PlaceTable":
        """A copy with some columns replaced (the table itself is immutable)."""
        source = columns.pop("source", self.source)
        kwargs = {c: getattr(self, c) for c in COLUMNS}
        kwargs.update(columns)
        return PlaceTable(**kwargs, source=source)

    def subset(self, rows, source: str | None = None) -> "PlaceTable":
        """The places of ``rows`` and all their ancestors, in this table's order (so still
        sorted by level and key), parents renumbered."""
        keep = np.zeros(len(self), dtype=bool)
        cur = np.unique(np.asarray(rows, dtype=np.int64))
        while len(cur):
            keep[cur] = True
            cur = self.parent[cur]
            cur = np.unique(cur[cur >= 0])
        old = np.flatnonzero(keep)
        new_index = np.full(len(self), -1, dtype=np.int64)
        new_index[old] = np.arange(len(old))
        parent = np.where(self.parent[old] >= 0, new_index[np.maximum(self.parent[old], 0)], -1).astype(np.int32)
        cols = {c: getattr(self, c)[old] for c in COLUMNS if c != "parent"}
        return PlaceTable(**cols, parent=parent, source=source or f"{self.source} (subset)")

    def save(self, path: str | Path) -> Path:
        """Write a parquet file (atomic: a temporary file renamed into place)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        meta = {"hierloc_schema": str(SCHEMA_VERSION), "hierloc_source": self.source,
                "hierloc_hash": self.content_hash()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        tmp = path.with_suffix(path.suffix + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PlaceTable":
        """Read a table written by :meth:`save` (parquet; no pickle involved)."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"place table {path} does not exist; build it with "
                "`python -m hierloc places build`"
            )
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        version = int(meta.get("hierloc_schema", "0"))
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"place table {path} has schema version {version}, this HierLoc reads "
                f"version {SCHEMA_VERSION}; rebuild it with `python -m hierloc places build`"
            )
        return cls.from_frame(table.to_pandas(), source=meta.get("hierloc_source", "unknown"))

    # ---- structure -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.key)

    def level_slice(self, level: int | str) -> slice:
        """Rows of one level as a slice (levels are contiguous)."""
        lv = level_index(level)
        if "slices" not in self._cache:
            bounds = np.searchsorted(self.level, np.arange(len(LEVELS) + 1), side="left")
            self._cache["slices"] = [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(len(LEVELS))]
        return self._cache["slices"][lv]

    def parent_within_level(self, level: int | str) -> np.ndarray:
        """Each place of ``level`` (> country): its parent's index among the places of the
        level above (0 .. that level's size - 1)."""
        lv = level_index(level)
        if lv == 0:
            raise ValueError("countries have no parent")
        return self.parent[self.level_slice(lv)] - self.level_slice(lv - 1).start

    def level_size(self, level: int | str) -> int:
        s = self.level_slice(level)
        return s.stop - s.start

    def counts(self) -> dict[str, int]:
        """Places per level, keyed by level name."""
        return {name: self.level_size(i) for i, name in enumerate(LEVELS)}

    def _children_csr(self) -> tuple[np.ndarray, np.ndarray]:
        if "children" not in self._cache:
            has_parent = np.flatnonzero(self.parent >= 0)
            order = has_parent[np.argsort(self.parent[has_parent], kind="stable")]
            counts = np.bincount(self.parent[has_parent], minlength=len(self))
            offsets = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self._cache["children"] = (offsets, order.astype(np.int32))
        return self._cache["children"]

    @property
    def child_offsets(self) -> np.ndarray:
        """CSR offsets (P + 1,): the children of row i are child_index[off[i]:off[i+1]]."""
        return self._children_csr()[0]

    @property
    def child_index(self) -> np.ndarray:
        """CSR child rows, grouped by parent, in key order within a parent."""
        return self._children_csr()[1]

    def children(self, row: int) -> np.ndarray:
        off, idx = self._children_csr()
        return idx[off[row]:off[row + 1]]

    def index(self, key: str) -> int:
        """Row of a key; KeyError naming the key when it is absent."""
        if "index" not in self._cache:
            self._cache["index"] = {k: i for i, k in enumerate(self.key)}
        try:
            return self._cache["index"][key]
        except KeyError:
            raise KeyError(f"no place with key {key!r} in this table ({self.source})") from None

    def get(self, key: str) -> int | None:
        try:
            return self.index(key)
        except KeyError:
            return None

    def ancestors(self, row: int) -> list[int]:
        """Rows from the country down to ``row`` inclusive."""
        out = []
        while row >= 0:
            out.append(int(row))
            row = int(self.parent[row])
        return out[::-1]

    def ancestor_at(self, rows: np.ndarray, level: int | str) -> np.ndarray:
        """Vectorised: the ancestor at ``level`` of each row (rows at or below that level)."""
        lv = level_index(level)
        rows = np.asarray(rows, dtype=np.int64).copy()
        for _ in range(len(LEVELS)):
            above = self.level[rows] > lv
            if not above.any():
                break
            rows[above] = self.parent[rows[above]]
        if np.any(self.level[rows] != lv):
            raise ValueError(f"some rows lie above level {LEVELS[lv]}")
        return rows

    def display_name(self, row: int) -> str:
        name = self.name[row]
        if name:
            return str(name)
        return f"(no {LEVELS[self.level[row]]} name)"

    def path_names(self, row: int) -> list[str]:
        return [self.display_name(r) for r in self.ancestors(row)]

    def content_hash(self) -> str:
        """SHA-256 over keys, parents and centroids: identifies the table a model used."""
        if "hash" not in self._cache:
            h = hashlib.sha256()
            h.update("\n".join(self.key.tolist()).encode())
            h.update(self.parent.astype("<i4").tobytes())
            h.update(np.round(self.lat_deg, 6).astype("<f8").tobytes())
            h.update(np.round(self.lon_deg, 6).astype("<f8").tobytes())
            self._cache["hash"] = h.hexdigest()
        return self._cache["hash"]

    def describe(self) -> dict:
        """Counts and a few facts, for `places stats`."""
        city = self.level_slice("city")
        sub = self.level_slice("sub-region")
        return {
            **self.counts(),
            "total": len(self),
            "source": self.source,
            "hash": self.content_hash(),
            "named_sub_regions": int(np.count_nonzero(self.name[sub] != "")),
            "cities_with_population": int(np.count_nonzero(np.isfinite(self.population[city]))),
            "regions_with_boundary": sum(1 for b in self.boundary[self.level_slice("region")] if b),
            "countries_with_boundary": sum(1 for b in self.boundary[self.level_slice("country")] if b),
        }

    def to_json_path(self, row: int) -> dict:
        """The path to ``row`` as {level: {"key", "name"}} (JSON-ready)."""
        return {LEVELS[self.level[r]]: {"key": str(self.key[r]), "name": str(self.name[r])}
                for r in self.ancestors(row)}


_DEFAULT: dict = {}


def default_places() -> PlaceTable:
    """The shipped offline hierarchy (assets/places/geonames.parquet), loaded once."""
    from hierloc.paths import PLACES_FILE

    if "table" not in _DEFAULT:
        if not PLACES_FILE.exists():
            log.warning("%s is missing: building the offline hierarchy now", PLACES_FILE)
            from hierloc.geo.build import build_from_geonames

            build_from_geonames().save(PLACES_FILE)
        _DEFAULT["table"] = PlaceTable.load(PLACES_FILE)
    return _DEFAULT["table"]
