"""The map: outlines of the predicted places, the candidates, the beam tree and the truth.

Built with folium and returned as a self-contained HTML page: Leaflet's own JS and CSS
(assets/vendor/leaflet) are inlined and folium's CDN lists emptied, so everything but
the base tiles draws offline. Only the polygons needed are sent, simplified.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache

import numpy as np

from hierloc import LEVELS
from hierloc.viz import LEVEL_COLORS, PHOTO_COLOR, TRUTH_COLOR

SIMPLIFY_DEG = {"country": 0.02, "region": 0.005, "sub-region": 0.002}
TILES = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"
TILES_ATTR = "&copy; OpenStreetMap contributors"


@lru_cache(maxsize=1)
def _leaflet_assets() -> tuple[str, str]:
    from hierloc.paths import ASSETS_DIR

    folder = ASSETS_DIR / "vendor" / "leaflet"
    return (folder / "leaflet.js").read_text(), (folder / "leaflet.css").read_text()


def _new_map(**kw):
    import folium

    m = folium.Map(tiles=None, control_scale=True, prefer_canvas=False, **kw)
    m.default_js, m.default_css = [], []  # no CDNs: Leaflet is inlined below
    js, css = _leaflet_assets()
    m.get_root().header.add_child(folium.Element(f"<style>{css}</style><script>{js}</script>"
                                                 "<style>html,body{background:#eef2f7;}</style>"), index=0)
    folium.TileLayer(TILES, attr=TILES_ATTR, name="OpenStreetMap").add_to(m)
    return m


def great_circle(lat1, lon1, lat2, lon2, n: int = 64) -> list[list[tuple[float, float]]]:
    """Points along the great circle, split where it crosses the antimeridian."""
    from hierloc.geo.distance import unit_vectors

    a, b = unit_vectors([lat1], [lon1])[0], unit_vectors([lat2], [lon2])[0]
    omega = np.arccos(np.clip(a @ b, -1, 1))
    if omega < 1e-9:
        return [[(lat1, lon1), (lat2, lon2)]]
    t = np.linspace(0, 1, n)[:, None]
    pts = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    lat = np.degrees(np.arcsin(np.clip(pts[:, 2], -1, 1)))
    lon = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    segments, cur = [], [(lat[0], lon[0])]
    for i in range(1, n):
        if abs(lon[i] - lon[i - 1]) > 180:
            segments.append(cur)
            cur = []
        cur.append((float(lat[i]), float(lon[i])))
    segments.append(cur)
    return segments


def _geojson(geom, level: str, tolerance: float) -> dict:
    import shapely

    g = shapely.simplify(geom, tolerance, preserve_topology=True)
    g = shapely.set_precision(g, 1e-4)
    return json.loads(shapely.to_geojson(g))


def outline_layers(table, rows_by_level: dict[str, int]):
    """(level, row, Outline) for the country, region and sub-region of a path."""
    from hierloc.geo.boundaries import place_outline

    out = []
    for level in ("country", "region", "sub-region"):
        row = rows_by_level.get(level)
        if row is None:
            continue
        o = place_outline(table, int(row))
        if o is not None and not o.geometry.is_empty:
            out.append((level, int(row), o))
    return out


def prediction_map(pred, table, truth: tuple[float, float] | None = None, height: int = 520):
    """A folium.Map of a Prediction (see infer.predictor) over its place table."""
    import folium

    m = _new_map(location=[pred.latitude, pred.longitude], zoom_start=4)
    rows = {p["level"]: table.get(p["key"]) for p in pred.path}
    bounds = []
    for level, row, o in outline_layers(table, rows):
        name = table.display_name(row) + (" (approximate outline)" if o.approximate else "")
        style = {"color": LEVEL_COLORS[level], "weight": 3 if level != "sub-region" else 2,
                 "fillOpacity": 0.12 if level == "country" else 0.15, "dashArray": "6 6" if o.approximate else None}
        folium.GeoJson(_geojson(o.geometry, level, SIMPLIFY_DEG[level]), name=f"{level}: {name}",
                       style_function=lambda _f, s=style: s,
                       tooltip=f"{level.title()}: {html.escape(name)}").add_to(m)
        minx, miny, maxx, maxy = o.geometry.bounds
        if level != "country" or not bounds:
            bounds = [[miny, minx], [maxy, maxx]]
    # the beam tree: each candidate's path, country -> region -> sub-region -> city
    n = max(len(pred.candidates), 1)
    for cand in reversed(pred.candidates):
        fade = 1.0 - 0.75 * (cand["rank"] - 1) / max(n - 1, 1)
        pts = []
        for lv, place in enumerate(cand["path"]):
            r = table.get(place["key"])
            if r is not None:
                pts.append((float(table.lat_deg[r]), float(table.lon_deg[r])))
        for i in range(len(pts) - 1):
            folium.PolyLine(pts[i:i + 2], color=LEVEL_COLORS[LEVELS[i + 1]], weight=2, opacity=0.25 + 0.6 * fade,
                            tooltip=f"beam {cand['rank']}: {LEVELS[i]} -> {LEVELS[i + 1]}").add_to(m)
        label = " > ".join(p["name"] or "-" for p in cand["path"])
        folium.CircleMarker([cand["latitude"], cand["longitude"]], radius=4 + 8 * fade, color=LEVEL_COLORS["city"],
                            fill=True, fill_opacity=0.2 + 0.6 * fade, weight=1 + fade,
                            tooltip=f"#{cand['rank']} {html.escape(label)}").add_to(m)
    folium.CircleMarker([pred.latitude, pred.longitude], radius=9, color="#ffffff", weight=3, fill=True,
                        fill_color=LEVEL_COLORS["city"], fill_opacity=1.0,
                        tooltip=f"Guess: {html.escape(pred.path[3]['name'] or pred.path[3]['key'])}").add_to(m)
    bounds_pts = [[pred.latitude, pred.longitude]]
    if truth is not None:
        from hierloc.geo.distance import haversine_km

        tlat, tlon = truth
        km = float(haversine_km(pred.latitude, pred.longitude, tlat, tlon))
        for seg in great_circle(tlat, tlon, pred.latitude, pred.longitude):
            folium.PolyLine(seg, color=TRUTH_COLOR, weight=2, dash_array="4 6",
                            tooltip=f"error: {km:,.0f} km").add_to(m)
        folium.CircleMarker([tlat, tlon], radius=8, color=TRUTH_COLOR, weight=3, fill=True, fill_color=PHOTO_COLOR,
                            fill_opacity=1.0, tooltip=f"True location ({km:,.0f} km from the guess)").add_to(m)
        bounds_pts.append([tlat, tlon])
    lat_all = [b[0] for b in bounds_pts] + ([bounds[0][0], bounds[1][0]] if bounds else [])
    lon_all = [b[1] for b in bounds_pts] + ([bounds[0][1], bounds[1][1]] if bounds else [])
    m.fit_bounds([[min(lat_all), min(lon_all)], [max(lat_all), max(lon_all)]], padding=(40, 40))
    return m


def place_map(table, row: int, children: list[int] = ()):
    """The Explore tab's map: a place's outline (or marker), its children as dots; clicks
    on the map are posted to the page so that the app can look the point up."""
    import folium

    m = _new_map(location=[float(table.lat_deg[row]), float(table.lon_deg[row])], zoom_start=5)
    rows = {LEVELS[int(table.level[r])]: r for r in table.ancestors(row)}
    bounds = None
    for level, r, o in outline_layers(table, rows):
        name = table.display_name(r) + (" (approximate outline)" if o.approximate else "")
        style = {"color": LEVEL_COLORS[level], "weight": 3 if r == row else 1, "fillOpacity": 0.1 if r == row else 0.0,
                 "dashArray": "6 6" if o.approximate else None}
        folium.GeoJson(_geojson(o.geometry, level, SIMPLIFY_DEG[level]), style_function=lambda _f, s=style: s,
                       tooltip=f"{level.title()}: {html.escape(name)}").add_to(m)
        if r == row:
            minx, miny, maxx, maxy = o.geometry.bounds
            bounds = [[miny, minx], [maxy, maxx]]
    for c in list(children)[:300]:
        lv = LEVELS[int(table.level[c])]
        folium.CircleMarker([float(table.lat_deg[c]), float(table.lon_deg[c])], radius=3, color=LEVEL_COLORS[lv],
                            fill=True, fill_opacity=0.8, tooltip=html.escape(table.display_name(c))).add_to(m)
    folium.CircleMarker([float(table.lat_deg[row]), float(table.lon_deg[row])], radius=7, color="#ffffff", weight=2,
                        fill=True, fill_color=LEVEL_COLORS[LEVELS[int(table.level[row])]], fill_opacity=1,
                        tooltip=html.escape(table.display_name(row))).add_to(m)
    if bounds:
        m.fit_bounds(bounds)
    click_js = ("<script>document.addEventListener('DOMContentLoaded',function(){setTimeout(function(){"
                "for (const k in window){ if (k.startsWith('map_') && window[k] && window[k].on){"
                "window[k].on('click', function(e){ window.parent.postMessage({hierloc_click:[e.latlng.lat, e.latlng.lng]}, '*'); });"
                "}}}, 50);});</script>")
    m.get_root().html.add_child(folium.Element(click_js))
    return m


def to_iframe(m, height: int = 520) -> str:
    """A folium map as an iframe (srcdoc) for gr.HTML."""
    page = m.get_root().render()
    return (f'<iframe class="hierloc-map" title="map" style="width:100%;height:{height}px;border:0;border-radius:8px" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>')
