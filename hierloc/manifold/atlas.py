"""The atlas: every place of the hierarchy embedded in the hyperbolic plane, constructed.

What it is
----------
A 2-D embedding of the place tree (the Earth -> countries -> regions -> sub-regions ->
cities) in the hyperbolic plane of curvature -1, built, not learned, in the manner of
Sarkar (2011) and Sala et al. (ICML 2018). The picture *is* the embedding: a Poincare
disk of it projects nothing.

The construction (:func:`build_atlas`)
--------------------------------------
- Each place has a *fan*: the directions in which its children leave it. The Earth's
  fan is the whole circle; every other place's is the half-angle ``psi`` on either side
  of the direction straight away from its parent (``phi = 0``).
- Children split the fan into wedges, one each, in the order of their geographic
  bearing from the parent's centroid (see :func:`_geo_angles`), each wedge as wide as
  the child's share ``(places in its subtree) ** weight_power``; the child sits on its
  wedge's bisector.
- A child's distance from its parent (``tau``) is the least that makes its own fan
  (half-angle ``psi``) fit inside its wedge: seen from a point at distance tau along the
  bisector of a wedge of half-angle beta, the wedge spans the half-angle psi with
  ``cos psi = (cos beta - tanh tau) / (1 - tanh tau cos beta)`` (the aberration of a
  direction under a boost), so ``tanh tau = (cos beta - cos psi) / (1 - cos beta cos
  psi)``; never less than the level's ``min_tau``. Wedges nest, so the subtrees of two
  siblings never meet.
- Deterministic: the same place table gives the same atlas to the last bit.

The numbers (frames and precision)
----------------------------------
A place deep in the tree lies 30 or more from the Earth's point, where float64 global
coordinates (about e^r) cannot tell two nearby places apart. So no global coordinates
are kept. Each place holds
  - ``tau``, ``phi``: distance from its parent and angle at the parent (0 = straight
    away from the parent's parent; for a country, the angle around the Earth's point),
    what ``atlas export`` writes;
  - ``rho``: its distance from the Earth's point;
  - ``inc`` (P, 4): the angle it adds at the Earth's point to its parent's, one slot per
    level, copied down the tree: a place's angle around the Earth's point is the sum of
    its row, and the difference of two places' angles is summed slot by slot, so that the
    slots they share cancel exactly (two cities of one sub-region differ only in the last
    slot, however deep they are);
  - ``omega``: the angle, at the place, from the outward radial direction (away from the
    Earth's point) to its own ``phi = 0`` direction.
Every quantity is then computed from these by formulas without cancellation:
  - distance: sinh^2(d/2) = sinh^2((r1 - r2)/2) + sinh r1 sinh r2 sin^2(C/2), C the
    angle between them at the Earth's point (:func:`pair_sinh2_half`);
  - the position of a place seen from any other (a view re-centred on it), by the
    boost that brings that place to the centre written the same way (:func:`seen_from`).
So every view and every hover distance is exact to float64 rounding, at any depth.

Points that are not places (the photo) are :class:`Point` objects: the same (rho,
angle increments) form, hung below an anchor place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from hierloc import LEVELS

ATLAS_VERSION = 1
NUM_LEVELS = 4
SLOTS = NUM_LEVELS + 1
"""Angle slots: one per level and one more for a point hung below a city (the photo)."""


@dataclass(frozen=True)
class AtlasConfig:
    """How the atlas is built (saved beside it; the defaults are what the app draws).

    psi_fraction: every place's children leave it within +-psi_fraction * pi of the direction
        away from its parent (< 1: they never point back at their grandparent).
    room_fraction: per level of the child (countries, regions, sub-regions), the
        half-angle (times pi) under which a child with children of its own must see its
        wedge, >= psi_fraction: the margin keeps its children away from the wedge's sides,
        where the places of a neighbouring wedge are near.
    leaf_room_fraction: the same for a child without children (a city): it needs no room
        for a subtree, only to stand apart from its siblings, so it sits nearer its parent.
    weight_power: a child's share of its parent's fan is (places in its subtree) ** this.
    min_tau: per level, the least distance of a place from its parent.
    """

    psi_fraction: float = 0.6
    room_fraction: tuple = (0.7, 0.7, 0.7)
    leaf_room_fraction: float = 0.2
    weight_power: float = 0.5
    min_tau: tuple = (9.0, 1.5, 1.5, 0.8)

    def __post_init__(self):
        if len(self.room_fraction) != NUM_LEVELS - 1 or not all(
                0.0 < self.psi_fraction <= r < 1.0 for r in self.room_fraction) or not 0 < self.leaf_room_fraction < 1:
            raise ValueError(f"need 0 < psi_fraction <= room_fraction < 1, got {self.psi_fraction}, "
                             f"{self.room_fraction}")
        if self.weight_power < 0:
            raise ValueError(f"weight_power must be >= 0, got {self.weight_power}")
        if len(self.min_tau) != NUM_LEVELS or min(self.min_tau) <= 0:
            raise ValueError(f"min_tau needs {NUM_LEVELS} positive distances, got {self.min_tau}")


# ---------------------------------------------------------------------------------------
# plane geometry: pure functions of (distance, angle) data, numpy float64
# ---------------------------------------------------------------------------------------
def wrap(angle):
    """Angles -> (-pi, pi]."""
    return np.pi - np.mod(np.pi - np.asarray(angle, dtype=np.float64), 2 * np.pi)


def tau_for_fan(beta, psi):
    """Distance along a wedge's bisector (wedge half-angle beta) from which the wedge is
    seen under the half-angle psi: (...), (...) -> (...). 0 where beta >= psi."""
    cb, cp = np.cos(beta), np.cos(psi)
    # tanh(tau) in [0, 1): the clip keeps arctanh finite where beta -> 0 (tau -> infinity)
    th = np.clip((cb - cp) / (1.0 - cb * cp), 0.0, 1.0 - 1e-15)
    return np.arctanh(th)


def step(a, t, alpha):
    """One step away from a point: the point P at distance ``a`` from the origin O; a
    point Q at distance ``t`` from P, in the direction ``alpha`` at P measured from the
    outward radial direction (counterclockwise). Returns (r, delta, omega), all (...):
    r = d(O, Q), delta = the angle at O from OP to OQ, omega = the angle at Q from the
    outward radial direction to the direction straight away from P.

    Written without cancellation for |alpha| < pi: the components of Q in P's radial
    frame are x1 = sinh(a + t) - 2 cosh a sinh t sin^2(alpha/2) (outward), x2 = sinh t
    sin alpha; and of O in Q's frame (axis P -> Q) o1 = sinh(a - t) - 2 cosh t sinh a
    cos^2(alpha/2), o2 = sinh a sin alpha."""
    a, t, alpha = (np.asarray(v, dtype=np.float64) for v in (a, t, alpha))
    x1 = np.sinh(a + t) - 2.0 * np.cosh(a) * np.sinh(t) * np.sin(alpha / 2) ** 2
    x2 = np.sinh(t) * np.sin(alpha)
    r = np.arcsinh(np.hypot(x1, x2))
    delta = np.arctan2(x2, x1)
    o1 = np.sinh(a - t) - 2.0 * np.cosh(t) * np.sinh(a) * np.cos(alpha / 2) ** 2
    o2 = np.sinh(a) * np.sin(alpha)
    # seen from Q, O lies at the angle atan2(o2, o1) from the axis P -> Q; the outward
    # radial direction is opposite (+pi), and omega is the axis measured from it
    omega = np.where(a > 0, wrap(-(np.arctan2(o2, o1) + np.pi)), 0.0)
    return r, delta, omega


def pair_sinh2_half(r1, r2, dtheta):
    """sinh^2(d/2) for two points at distances r1, r2 from the origin and the angle
    dtheta between them there (law of cosines, no cancellation): (...) -> (...)."""
    return np.sinh((r1 - r2) / 2) ** 2 + np.sinh(r1) * np.sinh(r2) * np.sin(dtheta / 2) ** 2


def dist_from_sinh2_half(s):
    """d = 2 asinh(sqrt(s)), s = sinh^2(d/2) >= 0."""
    return 2.0 * np.arcsinh(np.sqrt(np.maximum(s, 0.0)))


def seen_from(a, r, dtheta):
    """Points at (distance r, angle dtheta from the focus's direction) around the origin,
    seen from a focus at distance ``a`` from the origin (the boost that brings the focus
    to the centre): (...) -> (d, angle): the distance from the focus and the direction at
    the focus, measured from its outward radial direction. No cancellation:
    x1 = sinh(r - a) - 2 cosh a sinh r sin^2(dtheta/2), x2 = sinh r sin dtheta."""
    a, r, dtheta = (np.asarray(v, dtype=np.float64) for v in (a, r, dtheta))
    x1 = np.sinh(r - a) - 2.0 * np.cosh(a) * np.sinh(r) * np.sin(dtheta / 2) ** 2
    x2 = np.sinh(r) * np.sin(dtheta)
    return np.arcsinh(np.hypot(x1, x2)), np.arctan2(x2, x1)


def poincare(d, angle):
    """(distance from the centre, angle) -> (..., 2) unit Poincare disk coordinates
    (curvature -1): radius tanh(d/2)."""
    rad = np.tanh(np.asarray(d, dtype=np.float64) / 2)
    return np.stack([rad * np.cos(angle), rad * np.sin(angle)], -1)


def angle_diff(inc_a, inc_b):
    """Angle at the Earth's point from b to a, summed slot by slot so that shared
    ancestors cancel exactly: (..., S), (..., S) -> (...). The first slot (the country's
    angle) is wrapped; the others are small."""
    d = inc_a - inc_b
    return wrap(d[..., 0]) + d[..., 1:].sum(-1)


def geo_bearing(lat1_deg, lon1_deg, lat2_deg, lon2_deg):
    """Initial great-circle bearing from point 1 to point 2 as a map angle: radians,
    counterclockwise from east (east 0, north pi/2): (...) -> (...)."""
    p1, p2 = np.radians(lat1_deg), np.radians(lat2_deg)
    dl = np.radians(np.asarray(lon2_deg, dtype=np.float64) - lon1_deg)
    north = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    east = np.sin(dl) * np.cos(p2)
    return np.arctan2(north, east)


# ---------------------------------------------------------------------------------------
# the atlas
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """A point that is not a place (the photo): hung below ``anchor`` (a table row, -1 for
    the Earth's point). rho: distance from the Earth's point; inc (SLOTS,): angle slots
    as for places (the anchor's, then one more)."""

    anchor: int
    rho: float
    inc: np.ndarray


@dataclass(eq=False)
class Atlas:
    """The constructed embedding of a PlaceTable (rows in the table's order).

    Arrays, length P: level (int8), parent (int32 row, -1 for a country), tau, phi (the
    export), rho, omega (float64), inc (P, SLOTS) float64, geo (float64: the geographic
    angle of each place seen from its parent, the order the fan follows), size (int64:
    places in the subtree, the place included)."""

    level: np.ndarray
    parent: np.ndarray
    tau: np.ndarray
    phi: np.ndarray
    rho: np.ndarray
    omega: np.ndarray
    inc: np.ndarray
    geo: np.ndarray
    away: np.ndarray
    size: np.ndarray
    config: AtlasConfig
    table_hash: str
    seconds: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.level)

    @property
    def psi(self) -> float:
        return self.config.psi_fraction * np.pi

    # ---- distances ----------------------------------------------------------------
    def dist(self, rows_a, rows_b) -> np.ndarray:
        """Geodesic distances between places, element-wise (broadcast): rows -> (...)."""
        a, b = np.asarray(rows_a), np.asarray(rows_b)
        return dist_from_sinh2_half(pair_sinh2_half(self.rho[a], self.rho[b],
                                                    angle_diff(self.inc[a], self.inc[b])))

    def dist_point(self, point: Point, rows) -> np.ndarray:
        """Geodesic distances from a Point to places: rows (...) -> (...)."""
        rows = np.asarray(rows)
        return dist_from_sinh2_half(pair_sinh2_half(point.rho, self.rho[rows],
                                                    angle_diff(point.inc, self.inc[rows])))

    def point_of(self, row: int) -> Point:
        """A place as a Point (row -1: the Earth's point)."""
        if row < 0:
            return Point(-1, 0.0, np.zeros(SLOTS))
        return Point(int(row), float(self.rho[row]), self.inc[row].copy())

    # ---- views ----------------------------------------------------------------------
    def seen(self, focus, rho, inc, orient: float = 0.0):
        """Points (rho (...), inc (..., SLOTS)) seen from a focus: a place row, -1 for the
        Earth's point, or a Point. Returns (distance, angle) (...): the exact distance
        from the focus and the direction at the focus, measured from its phi = 0
        direction (a Point's: its outward radial direction; the Earth's: the angle
        around it), plus ``orient``. This is the view re-centred on the focus."""
        rho = np.asarray(rho, dtype=np.float64)
        if isinstance(focus, Point):
            f_rho, f_inc, omega = focus.rho, focus.inc, 0.0
        elif focus < 0:
            f_rho, f_inc, omega = 0.0, np.zeros(SLOTS), 0.0
        else:
            f_rho, f_inc, omega = float(self.rho[focus]), self.inc[focus], float(self.omega[focus])
        dtheta = angle_diff(inc, f_inc)
        if f_rho == 0.0:
            return rho.copy(), wrap(dtheta + orient)
        d, ang = seen_from(f_rho, rho, dtheta)
        return d, wrap(ang - omega + orient)

    def view(self, focus, rows, orient: float = 0.0):
        """Places seen from a focus (see :meth:`seen`): rows (N,) -> (N,), (N,)."""
        rows = np.asarray(rows)
        return self.seen(focus, self.rho[rows], self.inc[rows], orient)

    def view_point(self, focus, point: Point, orient: float = 0.0) -> tuple[float, float]:
        d, a = self.seen(focus, np.array([point.rho]), point.inc[None], orient)
        return float(d[0]), float(a[0])

    def north_up(self, focus: int) -> float:
        """The ``orient`` that draws a view of ``focus`` with north up (the Earth's: the
        Greenwich meridian down, as a map of the globe seen from above the North Pole)."""
        return float(-np.pi / 2 if focus < 0 else self.away[focus])

    # ---- export -------------------------------------------------------------------
    def export_frame(self, table):
        """One row per place: key, level, parent (key, '' for countries), tau, phi."""
        import pandas as pd

        parent_key = np.where(self.parent >= 0, table.key[np.maximum(self.parent, 0)], "")
        return pd.DataFrame({"key": table.key, "level": [LEVELS[int(v)] for v in self.level],
                             "parent": parent_key, "tau": self.tau, "phi": self.phi})

    def meta(self) -> dict:
        return {"atlas_version": ATLAS_VERSION, "config": asdict(self.config), "table_hash": self.table_hash,
                "curvature": -1.0, "places": int(len(self)), "build_seconds": round(self.seconds, 3)}


def _subtree_sizes(table) -> np.ndarray:
    """Places in each subtree, the place included: (P,) int64."""
    size = np.ones(len(table), dtype=np.int64)
    for lv in (3, 2, 1):
        sl = table.level_slice(lv)
        np.add.at(size, table.parent[sl], size[sl])
    return size


def _away_angles(table) -> np.ndarray:
    """For each place, the map direction (radians, counterclockwise from east) of its own
    phi = 0 direction, straight away from its parent: south at a country (the globe seen
    from above the North Pole, where going away from the pole is going south); deeper, the
    bearing from its parent's centroid to its own; a place at its parent's centroid keeps
    its parent's: (P,)."""
    lat, lon, parent = table.lat_deg, table.lon_deg, table.parent
    away = np.full(len(table), -np.pi / 2)
    for lv in range(1, NUM_LEVELS):
        sl = table.level_slice(lv)
        rows = np.arange(sl.start, sl.stop)
        p = parent[rows]
        same = (lat[p] == lat[rows]) & (lon[p] == lon[rows])
        away[rows] = np.where(same, away[p], geo_bearing(lat[p], lon[p], lat[rows], lon[rows]))
    return away


def _geo_angles(table, away: np.ndarray) -> np.ndarray:
    """The direction of each place seen from its parent, read off the map, relative to the
    parent's phi = 0 direction (for a country: its longitude, the angle around the North
    Pole): (P,). A child at its parent's centroid goes straight ahead (0)."""
    lat, lon, parent = table.lat_deg, table.lon_deg, table.parent
    out = np.zeros(len(table))
    c = table.level_slice(0)
    out[c] = np.radians(lon[c])
    rows = np.arange(c.stop, len(table))
    p = parent[rows]
    same = (lat[p] == lat[rows]) & (lon[p] == lon[rows])
    out[rows] = np.where(same, 0.0, wrap(geo_bearing(lat[p], lon[p], lat[rows], lon[rows]) - away[p]))
    return out


def build_atlas(table, config: AtlasConfig | None = None) -> Atlas:
    """Construct the atlas of a PlaceTable (see the module docstring). Vectorised per
    level; deterministic."""
    import time

    t0 = time.perf_counter()
    config = config or AtlasConfig()
    P = len(table)
    psi = config.psi_fraction * np.pi
    size = _subtree_sizes(table)
    weight = size.astype(np.float64) ** config.weight_power
    away = _away_angles(table)
    geo = _geo_angles(table, away)
    tau, phi = np.zeros(P), np.zeros(P)
    rho, omega = np.zeros(P), np.zeros(P)
    inc = np.zeros((P, SLOTS))
    for lv in range(NUM_LEVELS):
        sl = table.level_slice(lv)
        rows = np.arange(sl.start, sl.stop)
        par = table.parent[rows] if lv else np.full(len(rows), -1)
        # siblings in map order (ties by key: rows are key-sorted), grouped by parent
        order = rows[np.lexsort((rows, geo[rows], par))]
        par_o = par[order - sl.start]
        w = weight[order]
        starts = np.flatnonzero(np.r_[True, par_o[1:] != par_o[:-1]])
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
        total = np.add.reduceat(w, starts)[group]
        cum = np.cumsum(w) - (np.cumsum(w) - w)[starts][group]  # inclusive cumsum within the group
        share = w / total
        mid = (cum - w / 2) / total  # the wedge's centre, as a fraction of the fan
        fan = 2 * np.pi if lv == 0 else 2 * psi
        beta = share * fan / 2  # (N,) wedge half-angle
        room = np.where(size[order] > 1, config.room_fraction[min(lv, NUM_LEVELS - 2)],
                        config.leaf_room_fraction) * np.pi
        t = np.maximum(config.min_tau[lv], tau_for_fan(beta, room))
        if lv == 0:  # around the Earth: turn the circle so the wedges sit nearest their longitudes
            off = np.angle(np.sum(share * np.exp(1j * (geo[order] - mid * fan))))
            p = wrap(mid * fan + off)
        else:
            p = mid * fan - psi
        tau[order], phi[order] = t, p
        if lv == 0:
            rho[order] = t
            inc[order, 0] = p
        else:
            r, delta, om = step(rho[par_o], t, omega[par_o] + p)
            rho[order], omega[order] = r, om
            inc[order] = inc[par_o]
            inc[order, lv] = delta
    return Atlas(table.level.copy(), table.parent.copy(), tau, phi, rho, omega, inc, geo, away, size, config,
                 table.content_hash(), seconds=time.perf_counter() - t0)


def atlas_from_export(table, frame, config: AtlasConfig | None = None) -> Atlas:
    """Rebuild the atlas's frames from an export (key, level, parent, tau, phi) of the same
    table: what anyone can do to recheck it."""
    if list(frame["key"]) != list(table.key):
        raise ValueError("the export's keys are not this table's, in its order")
    parent_key = frame["parent"].fillna("").astype(str).to_numpy()
    parent = np.array([table.index(k) if k else -1 for k in parent_key], dtype=np.int32)
    if not np.array_equal(parent, table.parent):
        raise ValueError("the export's parents are not this table's")
    tau, phi = frame["tau"].to_numpy(np.float64), frame["phi"].to_numpy(np.float64)
    P = len(table)
    rho, omega, inc = np.zeros(P), np.zeros(P), np.zeros((P, SLOTS))
    for lv in range(NUM_LEVELS):
        sl = table.level_slice(lv)
        rows = np.arange(sl.start, sl.stop)
        if lv == 0:
            rho[rows], inc[rows, 0] = tau[rows], phi[rows]
            continue
        par = table.parent[rows]
        r, delta, om = step(rho[par], tau[rows], omega[par] + phi[rows])
        rho[rows], omega[rows] = r, om
        inc[rows] = inc[par]
        inc[rows, lv] = delta
    away = _away_angles(table)
    return Atlas(table.level.copy(), table.parent.copy(), tau, phi, rho, omega, inc, _geo_angles(table, away),
                 away, _subtree_sizes(table), config or AtlasConfig(), table.content_hash())


# ---------------------------------------------------------------------------------------
# the photo: a weighted centroid of places
# ---------------------------------------------------------------------------------------
def common_ancestor(parent: np.ndarray, rows: np.ndarray) -> int:
    """The deepest place above or at all ``rows`` (-1: the Earth's point)."""
    chains = []
    for r in np.unique(rows):
        chain = []
        while r >= 0:
            chain.append(int(r))
            r = parent[r]
        chains.append(chain[::-1])
    anc = -1
    for level_rows in zip(*chains):
        if len(set(level_rows)) != 1:
            break
        anc = level_rows[0]
    return anc


def hang(atlas: "Atlas", anchor: int, d: float, angle: float) -> Point:
    """The Point at distance d from ``anchor`` (-1: the Earth's point), in the direction
    ``angle`` at the anchor measured from its outward radial direction."""
    if anchor < 0:
        inc = np.zeros(SLOTS)
        inc[0] = wrap(angle)
        return Point(-1, float(d), inc)
    lv = int(atlas.level[anchor])
    r, delta, _ = step(atlas.rho[anchor], d, angle)
    inc = atlas.inc[anchor].copy()
    inc[lv + 1] = delta
    return Point(int(anchor), float(r), inc)


MEDIAN_TIE_BREAK = 1e-3
"""The median minimises sum_i w_i (d_i + MEDIAN_TIE_BREAK d_i^2): a hair of the mean
makes it unique where the plain median is not (an even split between two places puts it
at their midpoint, not anywhere between them) and moves it by next to nothing."""


STEP_TOL = 1e-9
"""The descent stops when its step is shorter than this (a billionth of the unit)."""


def centroid(atlas: "Atlas", rows, weights, kind: str = "median", iters: int = 200) -> Point:
    """The weighted hyperbolic centroid of places: rows (N,), weights (N,) >= 0 -> Point.

    kind "lorentz": the Lorentzian centroid (= the Einstein midpoint): sum_i w_i x_i on the
    hyperboloid, scaled back onto it; "frechet": the point of least sum_i w_i d(., x_i)^2;
    "median": of least sum_i w_i d(., x_i) (see MEDIAN_TIE_BREAK). The Lorentzian centroid
    is computed in the frame of the places' deepest common ancestor, where their
    coordinates are smallest; the other two start there and descend by iteratively
    reweighted steps (Weiszfeld's, for the median), each step taken in the frame of the
    current point (exact at any depth) and halved until the cost goes down."""
    rows = np.asarray(rows, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if kind not in ("lorentz", "frechet", "median"):
        raise ValueError(f"unknown centroid {kind!r}")
    keep = w > 0
    rows, w = rows[keep], w[keep]
    if len(rows) == 0:
        raise ValueError("a centroid needs at least one place with positive weight")
    if len(np.unique(rows)) == 1:
        return atlas.point_of(int(rows[0]))
    w = w / w.sum()
    anc = common_ancestor(atlas.parent, rows)
    if anc < 0:
        d, ang = atlas.rho[rows], angle_diff(atlas.inc[rows], np.zeros(SLOTS))
    else:
        d, ang = seen_from(atlas.rho[anc], atlas.rho[rows], angle_diff(atlas.inc[rows], atlas.inc[anc]))
    x = np.stack([np.cosh(d), np.sinh(d) * np.cos(ang), np.sinh(d) * np.sin(ang)], -1)  # (N, 3)
    m = w @ x  # (3,)
    p = m / np.sqrt(max(m[0] ** 2 - m[1] ** 2 - m[2] ** 2, 1e-300))
    q = hang(atlas, anc, float(np.arcsinh(np.hypot(p[1], p[2]))), float(np.arctan2(p[2], p[1])))
    return q if kind == "lorentz" else _descend(atlas, q, rows, w, kind, iters)


def _cost(d, w, kind) -> float:
    return float(w @ (d ** 2 if kind == "frechet" else d + MEDIAN_TIE_BREAK * d ** 2))


def _descend(atlas: "Atlas", q: Point, rows, w, kind: str, iters: int) -> Point:
    rho_x, inc_x = atlas.rho[rows], atlas.inc[rows]
    cost = _cost(atlas.dist_point(q, rows), w, kind)
    for _ in range(iters):
        d, ang = atlas.seen(q, rho_x, inc_x)  # (N,), (N,): the places seen from q
        # IRLS: the mean's gradient is sum_i w_i log_q(x_i); the median's weighs each by 1/d_i
        g = w if kind == "frechet" else w * (1.0 / np.maximum(d, 1e-12) + 2 * MEDIAN_TIE_BREAK)
        v = (g * d) @ np.stack([np.cos(ang), np.sin(ang)], -1) / g.sum()  # (2,) a step in q's tangent plane
        length = float(np.hypot(v[0], v[1]))
        direction = float(np.arctan2(v[1], v[0]))
        while length > STEP_TOL:
            cand = _move(atlas, q, length, direction)
            c = _cost(atlas.dist_point(cand, rows), w, kind)
            if c < cost:
                break
            length /= 2
        if length <= STEP_TOL:
            break
        q, cost = cand, c
    return q


def _move(atlas: "Atlas", q: Point, s: float, angle: float) -> Point:
    """The point at distance s from q, in the direction ``angle`` at q measured from its
    outward radial direction (q's anchor kept)."""
    r, delta, _ = step(q.rho, s, angle)
    inc = q.inc.copy()
    slot = 0 if q.anchor < 0 else int(atlas.level[q.anchor]) + 1
    inc[slot] = wrap(inc[slot] + delta) if slot == 0 else inc[slot] + delta
    return Point(q.anchor, float(r), inc)


# ---------------------------------------------------------------------------------------
# cached per table
# ---------------------------------------------------------------------------------------
_ATLASES: dict = {}


def atlas_for(table, config: AtlasConfig | None = None) -> Atlas:
    """The atlas of a table, built once per process (about a second for the shipped
    hierarchy; see the README)."""
    config = config or AtlasConfig()
    key = (table.content_hash(), config)
    if key not in _ATLASES:
        _ATLASES[key] = build_atlas(table, config)
    return _ATLASES[key]


__all__ = ["ATLAS_VERSION", "Atlas", "AtlasConfig", "Point", "atlas_for", "atlas_from_export", "build_atlas",
           "centroid", "dist_from_sinh2_half", "pair_sinh2_half", "poincare", "seen_from", "step", "tau_for_fan",
           "wrap"]
