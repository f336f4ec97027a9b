"""What the Poincare disk draws: views of the atlas (hierloc.manifold.atlas), re-centred on
a place, with the photo placed by its answer. Pure data (JSON-ready dicts); the browser
widget (hierloc/ui/atlas_disk.js) draws them, tests read them.

A view of focus F holds the places worth drawing around F (its ancestors up to the
Earth's point, its siblings, its children and grandchildren, and the answer's places),
each at its exact position seen from F, turned so that north is up, with the exact
distances from F and from the photo for the hover text. Nothing is projected: the atlas
lives in the hyperbolic plane, and the view is that plane moved by an isometry.

The photo (:func:`place_photo`): the weighted median of the atlas points of the cities
its answer gives probability to. In a tree, the weighted median lies in the deepest place
that holds more than half the weight; in the atlas, which is nearly a tree, it lies near
it: beside its city when that city holds more than half of the answer's probability, by
its region when only the region does, near the Earth's point when not even a country
does. The depth label says the same in words, read off the same probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierloc import LEVELS
from hierloc.manifold import atlas as A

PLURAL = {"country": "countries", "region": "regions", "sub-region": "sub-regions", "city": "cities"}
EARTH_KEY = "earth"
MAX_CITIES = 256            # the answer's cities kept for the photo (largest probability first)
KEEP_MASS = 0.999           # ... until they hold this share of its probability
CENTROID = "median"
"""How the photo's point is computed from the answer's cities (atlas.centroid): "median".
Measured on 300 GeoCLIP-space pseudo-photos at the calibrated noise level
(benchmarks/bench_photo_depth.py), the place of the answer's path nearest the photo's
point is the deepest place holding more than half the probability for 81.7% of the photos
with the median, 50.0% with the Frechet mean and 18.7% with the Lorentzian centroid (which
any far-away scrap of probability drags toward the centre); see the README."""
BEAM_BASIS = "of the probability of its final beam-search paths"
"""A beam search's distribution is a softmax over its final paths only (the places it
kept at every level), not over every place: the words say so."""
MAX_CHILDREN = 400
MAX_GRANDCHILDREN = 500
MAX_SIBLINGS = 60
FAR = 13.0                  # drawn beyond this distance from the focus only when they matter
LABEL_CHILDREN = 24


def place_name(table, row: int) -> str:
    return "the Earth" if row < 0 else table.display_name(row)


def level_name(table, row: int) -> str:
    return "earth" if row < 0 else LEVELS[int(table.level[row])]


# ---------------------------------------------------------------------------------------
# the photo
# ---------------------------------------------------------------------------------------
@dataclass
class PhotoPlacement:
    point: A.Point
    cities: np.ndarray       # (M,) table rows
    weights: np.ndarray      # (M,) summing to 1
    path: list               # table rows of the answer, country first
    masses: list             # the answer's probability at each level (of its path place)
    depth: int               # deepest level whose path place holds more than half (-1: none)
    text: str                # the depth in words
    basis: str = ""          # whose probability the shares are of, in words ('' the answer's own)

    def to_dict(self, table) -> dict:
        return {"anchor": "" if self.point.anchor < 0 else str(table.key[self.point.anchor]),
                "rho": round(self.point.rho, 6), "depth": self.depth,
                "point": {"anchor": int(self.point.anchor), "rho": self.point.rho, "inc": self.point.inc.tolist()},
                "depth_place": str(table.key[self.path[self.depth]]) if self.depth >= 0 else EARTH_KEY,
                "masses": [round(float(m), 4) for m in self.masses], "text": self.text, "basis": self.basis,
                "cities": [[str(table.key[r]), round(float(w), 6)] for r, w in zip(self.cities, self.weights)]}


def keep_cities(city_rows, probs, max_cities: int = MAX_CITIES, keep_mass: float = KEEP_MASS):
    """The answer's cities, most probable first, until they hold ``keep_mass`` of the
    probability (at most ``max_cities``), renormalised: rows (M,), weights (M,)."""
    rows = np.asarray(city_rows, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    ok = np.isfinite(p) & (p > 0) & (rows >= 0)
    rows, p = rows[ok], p[ok]
    if len(rows) == 0:
        raise ValueError("the answer gives no city a positive probability")
    # the same city can come twice (beam paths): add up
    uniq, inv = np.unique(rows, return_inverse=True)
    p = np.bincount(inv, weights=p)
    order = np.argsort(-p, kind="stable")[:max_cities]
    rows, p = uniq[order], p[order]
    total = p.sum()
    n = int(np.searchsorted(np.cumsum(p), keep_mass * total) + 1)
    rows, p = rows[:n], p[:n]
    return rows, p / p.sum()


def depth_words(table, path: list, masses: list, depth: int, basis: str = "") -> str:
    """The photo's depth in words; ``basis`` says whose probability the share is of
    (e.g. "of its 10 final paths' probability"), '' for the answer's own."""
    of = f" {basis}" if basis else ""
    if depth < 0:
        return (f"Not sure even of the country: {table.display_name(path[0])} has "
                f"{100 * masses[0]:.0f}%{of or ' of the probability'}")
    level = LEVELS[depth]
    sure = "Sure" if masses[depth] >= 0.9 else "Likely"
    return f"{sure} down to the {level}: {table.display_name(path[depth])} ({100 * masses[depth]:.0f}%{of})"


def place_photo(atlas: A.Atlas, table, path: list, city_rows, probs, kind: str = CENTROID,
                basis: str = "", masses=None) -> PhotoPlacement:
    """The photo's point from its answer: the answer's path (4 table rows, country first)
    and its distribution over cities (rows, probabilities); ``basis`` for the words (see
    depth_words); ``masses``: the probability of the path's places when the decoder gives
    them over every city (what the header shows), else read off the kept cities."""
    rows, w = keep_cities(city_rows, probs)
    point = A.centroid(atlas, rows, w, kind)
    given = valid_masses(masses)
    masses = given if given is not None else [
        float(w[table.ancestor_at(rows, lv) == place].sum()) for lv, place in enumerate(path)]
    depth = max([lv for lv in range(len(path)) if masses[lv] > 0.5], default=-1)
    return PhotoPlacement(point, rows, w, [int(r) for r in path], masses, depth,
                          depth_words(table, path, masses, depth, basis), basis)


def valid_masses(masses) -> list | None:
    """Four probabilities that do not grow down the path, else None."""
    if not isinstance(masses, (list, tuple)) or len(masses) != 4:
        return None
    try:
        m = [float(x) for x in masses]
    except (TypeError, ValueError):
        return None
    ok = all(np.isfinite(x) and 0.0 <= x <= 1.0 for x in m)
    return m if ok and all(a >= b - 1e-6 for a, b in zip(m, m[1:])) else None


def photo_from_dict(atlas: A.Atlas, table, d: dict | None, trusted: bool = False) -> PhotoPlacement | None:
    """Rebuild a PhotoPlacement from its dict; None when it does not fit. ``trusted``
    (a dict this process made, Prediction.disk): its point is read back as it is; else (as
    sent back by the page) the point is recomputed from the cities, never read."""
    if not isinstance(d, dict):
        return None
    try:
        cities = [(table.get(str(k)), float(w)) for k, w in list(d.get("cities", []))[:MAX_CITIES]]
        path = [table.get(str(k)) for k in list(d.get("path", []))[:4]]
    except (TypeError, ValueError):
        return None
    cities = [(r, w) for r, w in cities if r is not None and table.level[r] == 3 and np.isfinite(w) and w > 0]
    if not cities or len(path) != 4 or any(p is None for p in path):
        return None
    rows, w = zip(*cities)
    basis = str(d.get("basis", ""))[:80]
    basis = basis if basis in (BEAM_BASIS, "") else ""
    if trusted and isinstance(d.get("point"), dict):
        p = d["point"]
        point = A.Point(int(p["anchor"]), float(p["rho"]), np.asarray(p["inc"], dtype=np.float64))
        masses = [float(m) for m in d["masses"]]
        depth = int(d["depth"])
        w = np.asarray(w, dtype=np.float64)
        return PhotoPlacement(point, np.asarray(rows), w / w.sum(), path, masses, depth,
                              depth_words(table, path, masses, depth, basis), basis)
    return place_photo(atlas, table, path, rows, w, basis=basis, masses=d.get("masses") if not basis else None)


# ---------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------
def _children(table, row: int) -> np.ndarray:
    if row < 0:
        sl = table.level_slice(0)
        return np.arange(sl.start, sl.stop)
    return table.children(row).astype(np.int64)


def _largest(atlas, rows: np.ndarray, n: int) -> np.ndarray:
    if len(rows) <= n:
        return rows
    return rows[np.argsort(-atlas.size[rows], kind="stable")[:n]]


def _select(atlas, table, focus: int, photo: PhotoPlacement | None, candidates: list) -> dict:
    """row -> role, for the places worth drawing around ``focus`` (first role wins)."""
    roles: dict[int, str] = {}
    if focus >= 0:
        roles[focus] = "focus"
        for r in table.ancestors(focus)[:-1]:
            roles.setdefault(r, "ancestor")
    if photo is not None:
        for r in photo.path:
            roles.setdefault(int(r), "path")
        for r in candidates:
            for a in table.ancestors(int(r)):
                roles.setdefault(a, "candidate" if a == r else "path-of-candidate")
    kids = _children(table, focus)
    for r in _largest(atlas, kids, MAX_CHILDREN):
        roles.setdefault(int(r), "child")
    if focus >= 0 and len(kids):
        grand = np.concatenate([table.children(int(k)) for k in kids]) if len(kids) < 2000 else np.zeros(0, int)
        for r in _largest(atlas, grand.astype(np.int64), MAX_GRANDCHILDREN):
            roles.setdefault(int(r), "grandchild")
    if focus >= 0:
        sibs = _children(table, int(table.parent[focus]))
        sibs = sibs[sibs != focus]
        if len(sibs):
            near = sibs[np.argsort(atlas.dist(focus, sibs), kind="stable")[:MAX_SIBLINGS]]
            for r in near:
                roles.setdefault(int(r), "sibling")
    return roles


def focus_view(atlas: A.Atlas, table, focus: int, photo: PhotoPlacement | None = None, candidates=(),
               prev: dict | None = None) -> dict:
    """The JSON-ready view of ``focus`` (a table row; -1: the Earth's point): see the
    module docstring. ``prev`` = the previous view's "state" (for the animated move).
    Point 0 is the Earth's point; "parent" is the index of a point's parent among the
    points (-1 when it is not drawn)."""
    orient = atlas.north_up(focus)
    roles = _select(atlas, table, focus, photo, list(candidates))
    rows = np.array(list(roles), dtype=np.int64)
    d, ang = atlas.view(focus, rows, orient)
    must = np.isin([roles[int(r)] for r in rows], ["focus", "ancestor", "path", "candidate", "child"])
    keep = (d <= FAR) | must
    rows, d, ang = rows[keep], d[keep], ang[keep]
    e_d, e_a = atlas.seen(focus, np.array([0.0]), np.zeros((1, A.SLOTS)), orient)
    d_all = np.concatenate([e_d, d])
    xy = A.poincare(d_all, np.concatenate([e_a, ang]))
    index = {int(r): i + 1 for i, r in enumerate(rows)}
    parent = [-1] + [0 if table.parent[r] < 0 else index.get(int(table.parent[r]), -1) for r in rows]
    role_list = [roles[int(r)] for r in rows]
    kids_n = np.diff(table.child_offsets)
    pts = {
        "key": [EARTH_KEY] + [str(table.key[r]) for r in rows],
        "name": ["the Earth"] + [table.display_name(int(r)) for r in rows],
        "level": [-1] + [int(table.level[r]) for r in rows],
        "x": [round(float(v), 6) for v in xy[:, 0]],
        "y": [round(float(v), 6) for v in xy[:, 1]],
        "d": [round(float(v), 4) for v in d_all],
        "parent": parent,
        "role": ["focus" if focus < 0 else "earth"] + role_list,
        "kids": [table.level_size(0)] + [int(kids_n[r]) for r in rows],
        "label": [1] + [int(v) for v in _labels(atlas, table, rows, role_list, d)],
    }
    key = EARTH_KEY if focus < 0 else str(table.key[focus])
    view = {"kind": "atlas", "focus": key, "focus_name": place_name(table, focus),
            "focus_level": level_name(table, focus), "crumbs": _crumbs(table, focus), "points": pts,
            "caption": focus_caption(atlas, table, focus), "state": {"focus": key, "orient": round(orient, 12)}}
    if photo is not None:
        pts["dp"] = [round(photo.point.rho, 4)] + [round(float(v), 4) for v in atlas.dist_point(photo.point, rows)]
        pd, pa = atlas.view_point(focus, photo.point, orient)
        pxy = A.poincare(np.array([pd]), np.array([pa]))[0]
        keys = {"path": [str(table.key[r]) for r in photo.path],
                "candidates": [str(table.key[int(r)]) for r in candidates]}
        view["photo"] = {"x": round(float(pxy[0]), 6), "y": round(float(pxy[1]), 6), "d": round(pd, 4),
                         "rho": round(photo.point.rho, 4),
                         "text": photo.text, "depth": photo.depth, "masses": [round(m, 4) for m in photo.masses],
                         **keys}
        view["state"]["photo"] = {"cities": [[str(table.key[r]), round(float(w), 6)]
                                             for r, w in zip(photo.cities, photo.weights)], "basis": photo.basis,
                                  **keys}
    if prev:
        view["move"] = _move(atlas, table, prev, focus, orient)
    return view


def _labels(atlas, table, rows, roles, d) -> np.ndarray:
    """Which places get a written name: the focus, its ancestors, the answer's path and
    first candidates, its nearest siblings, and its children (the biggest, when many)."""
    lab = np.isin(roles, ["focus", "ancestor", "path"])
    child = np.flatnonzero(np.array(roles) == "child")
    if len(child):
        lab[child[np.argsort(-atlas.size[rows[child]], kind="stable")[:LABEL_CHILDREN]]] = True
    sib = np.flatnonzero(np.array(roles) == "sibling")
    if len(sib):
        lab[sib[np.argsort(d[sib], kind="stable")[:6]]] = True
    cand = np.flatnonzero(np.array(roles) == "candidate")
    lab[cand[:3]] = True
    near = np.isin(roles, ["focus", "ancestor", "path", "child"]) | (d < 9.0)
    return lab & near


def _crumbs(table, focus: int) -> list:
    out = [{"key": EARTH_KEY, "name": "the Earth", "level": "earth"}]
    if focus >= 0:
        out += [{"key": str(table.key[r]), "name": table.display_name(r), "level": LEVELS[int(table.level[r])]}
                for r in table.ancestors(focus)]
    return out


def _row_of(table, key) -> int | None:
    if key in (None, "", EARTH_KEY):
        return -1
    return table.get(str(key))


def _move(atlas, table, prev: dict, focus: int, orient: float) -> dict | None:
    """The isometry from the previous view to this one, as a Mobius map of the unit disk
    z -> e^{i rot} (z - a) / (1 - conj(a) z): a = where the new focus was drawn, rot so
    that the old focus lands where this view draws it. The page animates along it."""
    old = _row_of(table, prev.get("focus"))
    try:
        old_orient = float(prev.get("orient", 0.0))
    except (TypeError, ValueError):
        return None
    if old is None or old == focus or not np.isfinite(old_orient):
        return None
    a = complex(*A.poincare(*_seen_place(atlas, old, focus, old_orient))[0])
    b = complex(*A.poincare(*_seen_place(atlas, focus, old, orient))[0])
    if abs(a) < 1e-12 or abs(b) < 1e-12:
        return None
    rot = float(np.angle(-b / a))
    return {"a": [round(a.real, 9), round(a.imag, 9)], "rot": round(rot, 9), "from": prev.get("focus")}


def _seen_place(atlas, focus: int, row: int, orient: float):
    """(d, angle) arrays of one place (row -1: the Earth's point) seen from focus."""
    if row < 0:
        return atlas.seen(focus, np.array([0.0]), np.zeros((1, A.SLOTS)), orient)
    return atlas.view(focus, np.array([row]), orient)


COMPASS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")


def compass(angle: float) -> str:
    """A direction on a north-up picture (radians, counterclockwise from east) in words."""
    return COMPASS[int(np.round(np.mod(angle, 2 * np.pi) / (np.pi / 4))) % 8]


def focus_caption(atlas, table, focus: int) -> str:
    """One plain sentence about what this view shows."""
    kids = _children(table, focus)
    if focus < 0:
        d = atlas.rho[kids]
        far = f"{d.min():.1f}" if d.max() - d.min() < 0.05 else f"{d.min():.1f} to {d.max():.1f}"
        return (f"The Earth's point at the centre; its {len(kids)} countries around it, each {far} away: to give "
                f"every country room for its whole subtree, they must sit where the circle around the centre is "
                f"long, near the rim. Click one to bring it to the centre.")
    name, level = table.display_name(focus), LEVELS[int(table.level[focus])]
    parent = int(table.parent[focus])
    _, ang = _seen_place(atlas, focus, parent, atlas.north_up(focus))
    text = (f"{name} ({level}) at the centre, {atlas.tau[focus]:.2f} from its parent "
            f"{place_name(table, parent)} (behind it, to the {compass(float(ang[0]))}) and {atlas.rho[focus]:.2f} "
            f"from the Earth's point.")
    if len(kids) == 1:
        text += f" Its only {LEVELS[int(table.level[focus]) + 1]} lies {atlas.tau[kids[0]]:.1f} away."
    elif len(kids):
        d = atlas.tau[kids]
        text += (f" Its {len(kids)} {PLURAL[LEVELS[int(table.level[focus]) + 1]]} fan out {d.min():.1f} to "
                 f"{d.max():.1f} away, in their order on the map.")
    return text


def view_for_key(atlas, table, key, photo=None, candidates=(), prev=None) -> dict | None:
    row = _row_of(table, key)
    if row is None:
        return None
    return focus_view(atlas, table, row, photo, candidates, prev)


# ---------------------------------------------------------------------------------------
# why hyperbolic: numbers for the focused subtree, computed live
# ---------------------------------------------------------------------------------------
SUBTREE_CAP = 4000
PAIRS = 4000


def subtree_rows(table, focus: int, cap: int = SUBTREE_CAP) -> np.ndarray:
    """The focus and its descendants, breadth first, at most ``cap`` (whole levels while
    they fit, then the largest subtrees' places)."""
    out = [np.array([focus])] if focus >= 0 else []
    frontier = _children(table, focus)
    total = len(out[0]) if out else 0
    while len(frontier) and total < cap:
        take = frontier[:cap - total]
        out.append(take)
        total += len(take)
        off, idx = table.child_offsets, table.child_index
        frontier = np.concatenate([idx[off[r]:off[r + 1]] for r in take]) if len(take) else np.zeros(0, int)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def euclidean_layout(atlas, table, rows: np.ndarray, focus: int) -> np.ndarray:
    """The same subtree in the flat plane with the same edge lengths and the same angles at
    every place (the atlas's construction with Euclidean steps): rows (N,) -> (N, 2)."""
    pos = {focus: np.zeros(2)}
    direction = {focus: 0.0}
    out = np.zeros((len(rows), 2))
    for i, r in enumerate(rows):
        r = int(r)
        if r == focus:
            continue
        p = int(table.parent[r]) if table.parent[r] >= 0 else -1
        base, head = pos[p], direction[p]
        a = head + float(atlas.phi[r])
        pos[r] = base + float(atlas.tau[r]) * np.array([np.cos(a), np.sin(a)])
        direction[r] = a
        out[i] = pos[r]
    return out


def tree_distances(atlas, table, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lengths of the tree paths between places (sum of tau over the edges): (N,) -> (N,)."""
    out = np.zeros(len(a))
    for i, (x, y) in enumerate(zip(a, b)):
        ax, ay = table.ancestors(int(x)), table.ancestors(int(y))
        k = 0
        while k < min(len(ax), len(ay)) and ax[k] == ay[k]:
            k += 1
        out[i] = atlas.tau[ax[k:]].sum() + atlas.tau[ay[k:]].sum()
    return out


def teaching_numbers(atlas, table, focus: int, seed: int = 0) -> dict:
    """Why hyperbolic, for the subtree of ``focus``: how many places lie within distance r
    (and the areas of hyperbolic and flat disks of radius r), and the same subtree laid
    out in the flat plane with the same edge lengths: places drawn on top of another, and
    how far the layouts' distances stray from the tree's."""
    all_rows = np.arange(len(table))
    if focus >= 0:
        d_all = atlas.dist(np.full(len(table), focus), all_rows)
    else:
        d_all = atlas.rho.copy()
    radii = list(range(2, int(np.ceil(float(d_all.max()) / 2)) * 2 + 2, 2))
    within = [int((d_all <= r).sum()) for r in radii]
    rows = subtree_rows(table, focus)
    out = {"focus": place_name(table, focus), "radii": radii, "within": within,
           "hyperbolic_area": [round(2 * np.pi * (np.cosh(r) - 1), 1) for r in radii],
           "flat_area": [round(np.pi * r * r, 1) for r in radii], "subtree": int(len(rows))}
    if len(rows) < 3:
        return out
    flat = euclidean_layout(atlas, table, rows, focus) if focus >= 0 else _earth_flat(atlas, table, rows)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(rows), PAIRS), rng.integers(0, len(rows), PAIRS)
    ok = i != j
    i, j = i[ok], j[ok]
    a, b = rows[i], rows[j]
    tree = tree_distances(atlas, table, a, b) if focus >= 0 else _tree_from_earth(atlas, table, a, b)
    hyp = _dist_any(atlas, a, b)
    fl = np.linalg.norm(flat[i] - flat[j], axis=1)
    out["hyperbolic_distortion"] = round(float(np.mean(np.abs(hyp / tree - 1))), 4)
    out["flat_distortion"] = round(float(np.mean(np.abs(fl / tree - 1))), 4)
    # places drawn on top of another: nearest other place closer than 1% of the mean edge
    eps = 0.01 * float(np.mean(atlas.tau[rows[rows >= 0]]))
    out["overlap_threshold"] = round(eps, 4)
    out["flat_overlaps"] = _overlaps_flat(flat, eps)
    out["hyperbolic_overlaps"] = _overlaps_hyp(atlas, rows, eps)
    return out


def _dist_any(atlas, a, b):
    return atlas.dist(a, b)


def _earth_flat(atlas, table, rows):
    """Flat layout of the whole tree from the Earth's point (countries at their angles)."""
    pos, direction = {}, {}
    out = np.zeros((len(rows), 2))
    for i, r in enumerate(rows):
        r = int(r)
        p = int(table.parent[r])
        if p < 0:
            a = float(atlas.phi[r])
            pos[r] = float(atlas.tau[r]) * np.array([np.cos(a), np.sin(a)])
        else:
            a = direction[p] + float(atlas.phi[r])
            pos[r] = pos[p] + float(atlas.tau[r]) * np.array([np.cos(a), np.sin(a)])
        direction[r] = a
        out[i] = pos[r]
    return out


def _tree_from_earth(atlas, table, a, b):
    return tree_distances(atlas, table, a, b)


def _overlaps_flat(xy: np.ndarray, eps: float) -> int:
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    d, _ = tree.query(xy, k=2)
    return int((d[:, 1] < eps).sum())


def _overlaps_hyp(atlas, rows: np.ndarray, eps: float) -> int:
    from hierloc.eval.atlas_stats import nearest

    nn = nearest(atlas, rows, rows, np.full(len(rows), eps), exclude_self=True)
    found = nn >= 0
    return int((atlas.dist(rows[found], nn[found]) < eps).sum())


def teaching_text(nums: dict) -> str:
    """The numbers as two short paragraphs (markdown)."""
    lines = []
    if nums.get("radii"):
        pairs = [(r, n) for r, n in zip(nums["radii"], nums["within"])]
        pick = [p for p in pairs if p[1] > 1][:4] or pairs[:3]
        growth = ", ".join(f"within {r}: {n:,}" for r, n in pick)
        if len(pick) >= 2:
            (r0, _), (r1, _) = pick[0], pick[-1]
            hyp = (np.cosh(r1) - 1) / (np.cosh(r0) - 1)
            flat = (r1 / r0) ** 2
            lines.append(f"**Room grows exponentially.** Places of the atlas near {nums['focus']}: {growth}. "
                         f"From radius {r0} to {r1} a hyperbolic disk's area grows {hyp:,.0f} times; a flat "
                         f"disk's only {flat:.0f} times. A tree's places multiply at every level, and only "
                         f"hyperbolic space has that much room for them.")
    if "flat_overlaps" in nums:
        lines.append(f"**The same {nums['subtree']:,} places on a flat plane,** with the same distances between "
                     f"each place and its parent and the same angles, pile up: {nums['flat_overlaps']:,} land within "
                     f"{nums['overlap_threshold']} of another place (in the atlas: {nums['hyperbolic_overlaps']:,}), and "
                     f"distances between places stray from the tree's by {100 * nums['flat_distortion']:.0f}% on "
                     f"average (in the atlas: {100 * nums['hyperbolic_distortion']:.0f}%).")
    return "\n\n".join(lines)
