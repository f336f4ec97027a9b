"""The Poincare disk: the photo and its places in 2-D, projected so the picture does not lie.

Every point keeps its exact hyperbolic distance from the origin (how specific a place
is); only directions are reduced: log_0 -> unit directions -> PCA fitted on the points
shown -> 2-D direction with the original tangent norm -> exp_0 -> Lorentz -> Poincare.
Angles are therefore approximate and radii exact; hover texts give true geodesic
distances, computed in the model's full dimension. Geodesic arcs are drawn in the 2-D
model (circle arcs orthogonal to the rim).
"""

from __future__ import annotations

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.manifold import lorentz as L
from hierloc.viz import LEVEL_COLORS, PHOTO_COLOR

CAPTION = (
    "Each dot is a place as the model sees it, in a Poincare disk: the whole hyperbolic space drawn inside a "
    "circle. Distance from the centre grows with how specific a place is: countries sit near the middle, "
    "cities crowd near the rim, and a country's cities lie close to one another and to it. There is "
    "exponentially more room near the rim, which is why a tree of places fits without crowding. The model "
    "compares hyperbolic distances (the curved arcs), not straight lines. The picture is a 2-D projection of "
    "a higher-dimensional space: distances from the centre are exact, angles approximate; hover a dot for its "
    "true distance to the photo.")


def project(points: np.ndarray, geometry: str, K: float, fit_rows: slice | None = None) -> np.ndarray:
    """(M, p) model points -> (M, 2) Poincare coordinates in the unit disk (radius-exact).

    The PCA of directions is fitted on ``points[fit_rows]`` (the places shown) and
    applied to all rows, the photo included, so that they stay comparable."""
    x = torch.as_tensor(points, dtype=torch.float64)
    t = L.log0(x, K) if geometry == "lorentz" else x  # (M, D) tangent vectors
    r = t.norm(dim=-1, keepdim=True)  # (M, 1) exact distance from the origin
    u = t / r.clamp_min(1e-12)
    fit = u[fit_rows] if fit_rows is not None else u
    mean = fit.mean(0, keepdim=True)
    centred = fit - mean
    if len(fit) >= 2 and float(centred.abs().max()) > 0:
        _, _, v = torch.pca_lowrank(centred, q=min(2, centred.shape[1]), center=False)
        d2 = (u - mean) @ v[:, :2]  # (M, 2)
        if d2.shape[1] < 2:
            d2 = torch.cat([d2, torch.zeros_like(d2)], 1)
    else:
        d2 = torch.zeros(len(u), 2, dtype=torch.float64)
        d2[:, 0] = 1.0
    d2 = d2 / d2.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    p = L.to_poincare(L.exp0(r * d2, K), K) / K ** 0.5  # (M, 2) in the unit disk
    return p.numpy()


def geodesic_arc(p: np.ndarray, q: np.ndarray, n: int = 48) -> np.ndarray:
    """Points of the geodesic between two points of the unit Poincare disk: (n, 2)."""
    x = L.from_poincare(torch.as_tensor(p, dtype=torch.float64))
    y = L.from_poincare(torch.as_tensor(q, dtype=torch.float64))
    d = float(L.dist(x, y))
    if d < 1e-9:
        return np.stack([p, q])
    t = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    pts = (torch.sinh((1 - t) * d) * x + torch.sinh(t * d) * y) / np.sinh(d)
    return L.to_poincare(pts).numpy()


def disk_figure(disk: dict, title: str = ""):
    """A plotly Figure from Prediction.disk (or any dict with geometry, K, photo, places)."""
    import plotly.graph_objects as go

    places = disk["places"]
    pts = np.array([disk["photo"]] + [p["point"] for p in places]) if disk.get("photo") is not None \
        else np.array([p["point"] for p in places])
    has_photo = disk.get("photo") is not None
    xy = project(pts, disk["geometry"], float(disk["K"]), fit_rows=slice(1 if has_photo else 0, None))
    photo_xy, place_xy = (xy[0], xy[1:]) if has_photo else (None, xy)
    fig = go.Figure()
    theta = np.linspace(0, 2 * np.pi, 241)
    fig.add_trace(go.Scatter(x=np.cos(theta), y=np.sin(theta), mode="lines", line=dict(color="#94a3b8", width=1.5),
                             hoverinfo="skip", showlegend=False, name="rim"))
    K = float(disk["K"])
    if has_photo:  # arcs from the photo to the places of its path and the candidate cities
        for p, (x, y) in zip(places, place_xy):
            if p["role"] == "path" or (p["role"] == "candidate" and p["level"] == "city"):
                arc = geodesic_arc(photo_xy, np.array([x, y]))
                fig.add_trace(go.Scatter(x=arc[:, 0], y=arc[:, 1], mode="lines", hoverinfo="skip", showlegend=False,
                                         line=dict(color=LEVEL_COLORS[p["level"]], width=2 if p["role"] == "path" else 1,
                                                   dash="solid" if p["role"] == "path" else "dot"),
                                         opacity=0.8 if p["role"] == "path" else 0.45))
    radius = [float(L.dist0(torch.as_tensor(pt, dtype=torch.float64), K)) if disk["geometry"] == "lorentz"
              else float(np.linalg.norm(pt)) for pt in pts[1 if has_photo else 0:]]
    for level in LEVELS:
        idx = [i for i, p in enumerate(places) if p["level"] == level]
        if not idx:
            continue
        size = [14 if places[i]["role"] == "path" else 9 if places[i]["role"] == "candidate" else 7 for i in idx]
        opac = [1.0 if places[i]["role"] == "path" else 0.75 if places[i]["role"] == "candidate" else 0.45 for i in idx]
        text = [f"<b>{_esc(places[i]['name'] or places[i]['key'])}</b><br>{level} ({places[i]['role']})"
                + (f"<br>distance to photo: {places[i]['distance']:.3f}" if places[i].get("distance") is not None else "")
                + f"<br>distance from centre: {radius[i]:.3f}" for i in idx]
        fig.add_trace(go.Scatter(x=place_xy[idx, 0], y=place_xy[idx, 1], mode="markers", name=level,
                                 marker=dict(color=LEVEL_COLORS[level], size=size, opacity=opac,
                                             line=dict(color="#ffffff", width=1)),
                                 hovertext=text, hoverinfo="text"))
    if has_photo:
        fig.add_trace(go.Scatter(x=[photo_xy[0]], y=[photo_xy[1]], mode="markers", name="photo",
                                 marker=dict(symbol="star", size=20, color=PHOTO_COLOR, line=dict(color="#ffffff", width=1.5)),
                                 hovertext=["<b>the photo</b>"], hoverinfo="text"))
    if disk.get("view"):  # whose places these are (trained or not), and why a photo may be missing
        fig.add_annotation(text=_esc(" · ".join(t for t in (disk["view"], disk.get("note")) if t)),
                           xref="paper", yref="paper", x=0.0, y=1.0, xanchor="left", yanchor="top", showarrow=False,
                           font=dict(size=11, color="#64748b"), align="left")
    fig.update_layout(title=title or None, showlegend=True, height=520, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.08, x=0.5, xanchor="center"),
                      xaxis=dict(visible=False, range=[-1.05, 1.05]),
                      yaxis=dict(visible=False, range=[-1.05, 1.05], scaleanchor="x", scaleratio=1),
                      plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)")
    return fig


def _esc(s: str) -> str:
    import html

    return html.escape(str(s))


def place_disk(engine, table, row: int, max_children: int = 40) -> tuple[dict, list[dict]]:
    """Disk data for the Explore tab: a place, its ancestors and children; and the
    geodesic distances between the place and each of them. ``engine`` is a Predictor's
    Engine (its place_view() is drawn)."""
    starts = [table.level_slice(lv).start for lv in range(4)]
    view = engine.place_view()

    def point(r):
        lv = int(table.level[r])
        return view.level_points[lv][r - starts[lv]]

    me = point(row)
    rows = [(r, "path") for r in table.ancestors(row)]
    kids = table.children(row)
    if len(kids) > max_children:  # the nearest children in the model's space
        d = view.geometry.sq_dist(me[None].expand(len(kids), -1), torch.stack([point(int(k)) for k in kids]))
        kids = kids[torch.argsort(d).numpy()[:max_children]]
    rows += [(int(k), "child") for k in kids]
    places, dists = [], []
    for r, role in rows:
        pt = point(r)
        dist = float(view.geometry.sq_dist(me, pt).sqrt())
        places.append({"row": r, "level": LEVELS[int(table.level[r])], "key": str(table.key[r]),
                       "name": str(table.name[r]), "role": role if r != row else "path", "point": pt.tolist(),
                       "distance": dist})
        if r != row:
            dists.append({"place": table.display_name(r), "level": LEVELS[int(table.level[r])],
                          "relation": "ancestor" if role == "path" else "child", "hyperbolic distance": round(dist, 3)})
    disk = {"geometry": view.geometry.kind, "K": float(torch.as_tensor(view.geometry.K)), "photo": None,
            "places": places, "view": view.label, "trained": view.trained}
    return disk, dists
