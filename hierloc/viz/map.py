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
WORLD_SIMPLIFY_DEG, WORLD_PRECISION_DEG, WORLD_MIN_AREA_DEG2 = 0.2, 0.02, 0.05  # about 240 KB for the world
REGION_SIMPLIFY_DEG = 0.03
SEA_COLOR, LAND_COLOR, BORDER_COLOR = "#c6dbee", "#f4f1ea", "#a3adb8"
PROB_BINS = (0.001, 0.01, 0.05, 0.2, 0.5)  # edges of the choropleth's classes
PROB_COLORS = ("#f3f0f9", "#d8d1ea", "#b3a3d6", "#8a6cbf", "#6339a6", "#3f1280")
TILES = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"
TILES_ATTR = "&copy; OpenStreetMap contributors"


@lru_cache(maxsize=1)
def _leaflet_assets() -> tuple[str, str]:
    from hierloc.paths import ASSETS_DIR

    folder = ASSETS_DIR / "vendor" / "leaflet"
    return (folder / "leaflet.js").read_text(), (folder / "leaflet.css").read_text()


def raw_element(text: str):
    """A folium Element that renders ``text`` as it is. folium.Element compiles its text as
    a Jinja template at every instance: for the inlined Leaflet (160 KB) and the world's
    outlines (570 KB) that was half of a map's time, for text with nothing to fill in."""
    import folium

    class _Raw(folium.Element):
        def __init__(self, body: str):
            super().__init__()
            self._body = body

        def render(self, **kwargs):
            # as Jinja renders a template: one trailing newline dropped (the same page, byte for byte)
            return self._body[:-1] if self._body.endswith("\n") else self._body

    return _Raw(text)


@lru_cache(maxsize=1)
def _header() -> str:
    js, css = _leaflet_assets()
    return (f"<style>{css}</style><script>{js}</script><style>html,body{{background:{SEA_COLOR};}}"
            f".leaflet-container{{background:{SEA_COLOR};}} .hl-legend{{background:#fff;padding:6px 8px;"
            "border-radius:6px;font:12px/1.4 sans-serif;box-shadow:0 1px 4px rgba(0,0,0,.3)}"
            ".hl-legend i{display:inline-block;width:14px;height:10px;margin-right:4px}</style>")


def _new_map(**kw):
    import folium

    m = folium.Map(tiles=None, control_scale=True, prefer_canvas=False, **kw)
    m.default_js, m.default_css = [], []  # no CDNs: Leaflet is inlined below
    m.get_root().header.add_child(raw_element(_header()), index=0)
    folium.TileLayer(TILES, attr=TILES_ATTR, name="OpenStreetMap").add_to(m)
    return m


def _light(geom, tolerance: float, precision: float, min_area: float = 0.0):
    """A small drawing of a (multi)polygon: parts under min_area dropped (the largest kept),
    simplified, coordinates snapped to ``precision`` degrees."""
    import shapely

    parts = list(getattr(geom, "geoms", [geom]))
    largest = max(parts, key=lambda g: g.area)
    keep = [g for g in parts if g.area >= min_area or g is largest]
    g = shapely.MultiPolygon(keep) if len(keep) > 1 else keep[0]
    return shapely.set_precision(shapely.simplify(g, tolerance, preserve_topology=True), precision)


@lru_cache(maxsize=4)
def _world_features(table_hash: str, table) -> str:
    """Every country outline, light enough to send with each map (GeoJSON text); each
    feature names its place key (k) and name (n) where the hierarchy links it."""
    import shapely

    from hierloc.geo.boundaries import load_countries

    world = load_countries()
    keys = {}
    c = table.level_slice("country")
    for row in range(c.start, c.stop):
        for b in table.boundary[row]:
            keys.setdefault(int(b), (str(table.key[row]), table.display_name(row)))
    feats = []
    for i, geom in enumerate(world.geometry.values):
        g = _light(geom, WORLD_SIMPLIFY_DEG, WORLD_PRECISION_DEG, WORLD_MIN_AREA_DEG2)
        if g.is_empty:
            continue
        k, n = keys.get(i, ("", str(world["iso_a2"].iloc[i])))
        feats.append(f'{{"type":"Feature","properties":{{"k":{json.dumps(k)},"n":{json.dumps(n)}}},'
                     f'"geometry":{shapely.to_geojson(g)}}}')
    return '{"type":"FeatureCollection","features":[' + ",".join(feats) + "]}"


@lru_cache(maxsize=4096)
def _region_geometry(table_hash: str, table, key: str) -> str | None:
    """A region's light outline as GeoJSON geometry text (None when it has none)."""
    import shapely

    from hierloc.geo.boundaries import place_outline

    row = table.get(key)
    o = place_outline(table, row) if row is not None else None
    if o is None or o.geometry.is_empty:
        return None
    return shapely.to_geojson(_light(o.geometry, REGION_SIMPLIFY_DEG, 0.01))


def _region_features(table, probs: dict) -> str:
    """The outlines of the regions in ``probs`` (GeoJSON text) with their probability."""
    feats = []
    for key, p in probs.items():
        geom = _region_geometry(table.content_hash(), table, key)
        if geom is not None:
            name = table.display_name(table.get(key))
            feats.append(f'{{"type":"Feature","properties":{{"k":{json.dumps(key)},"n":{json.dumps(name)},'
                         f'"p":{p}}},"geometry":{geom}}}')
    return '{"type":"FeatureCollection","features":[' + ",".join(feats) + "]}"


def add_world(m, table, distribution: dict | None = None, top: int = 3) -> None:
    """The offline base map and, when a distribution is given, the choropleth of where
    else the photo could be (countries, and the regions of the two likeliest countries),
    with a legend and a switch. Land sits below the tiles: with network the tiles cover
    it, without network it is the map."""
    countries = (distribution or {}).get("country", {})
    regions = (distribution or {}).get("region", {})
    best = sorted(countries.items(), key=lambda kv: -kv[1])[:top]
    names = {}
    for k, _ in best:
        r = table.get(k)
        names[k] = table.display_name(r) if r is not None else k
    legend_rows = "".join(
        f'<div class="hl-top" data-key="{html.escape(k)}" data-p="{p}">{html.escape(names[k])}: {100 * p:.1f}%</div>'
        for k, p in best)
    edges = (0.0,) + PROB_BINS + (1.0,)
    bins = "".join(f'<div><i style="background:{c}"></i>{_pct(a)} - {_pct(b)}</div>'
                   for a, b, c in zip(edges, edges[1:], PROB_COLORS))
    legend = (f'<div class="hl-legend" id="hl-legend"><b>Where else: probability</b>{legend_rows}'
              f'<div style="margin-top:4px">{bins}</div></div>')
    js = f"""
document.addEventListener('DOMContentLoaded', function() {{
  var map = {m.get_name()};
  map.createPane('hl-land'); map.getPane('hl-land').style.zIndex = 150;  // under the tiles (200)
  var world = {_world_features(table.content_hash(), table)};
  L.geoJSON(world, {{pane: 'hl-land', interactive: false,
    style: {{color: '{BORDER_COLOR}', weight: 0.7, fillColor: '{LAND_COLOR}', fillOpacity: 1}}}}).addTo(map);
  var pc = {json.dumps(countries)};
  if (Object.keys(pc).length === 0) return;
  var edges = {json.dumps(list(PROB_BINS))}, colors = {json.dumps(list(PROB_COLORS))};
  function colour(p) {{ var i = 0; while (i < edges.length && p >= edges[i]) i++; return colors[i]; }}
  function pct(p) {{ return p >= 0.001 ? (100 * p).toFixed(1) + '%' : '< 0.1%'; }}
  function styled(p) {{ return {{color: '#555', weight: 0.5, fillColor: colour(p), fillOpacity: p >= {PROB_BINS[0]} ? 0.65 : 0.25}}; }}
  var byCountry = L.geoJSON(world, {{
    style: function(f) {{ return styled(pc[f.properties.k] || 0); }},
    onEachFeature: function(f, l) {{ l.bindTooltip(f.properties.n + ': ' + pct(pc[f.properties.k] || 0), {{sticky: true}}); }}
  }});
  var byRegion = L.geoJSON({_region_features(table, regions)}, {{
    style: function(f) {{ var s = styled(f.properties.p); s.weight = 0.8; return s; }},
    onEachFeature: function(f, l) {{ l.bindTooltip(f.properties.n + ': ' + pct(f.properties.p), {{sticky: true}}); }}
  }});
  var layer = L.layerGroup([byCountry, byRegion]).addTo(map);
  layer.eachLayer(function(g) {{ g.bringToBack(); }});
  L.control.layers(null, {{'Where else: probability': layer}}, {{collapsed: false, position: 'topright'}}).addTo(map);
  var legend = L.control({{position: 'bottomleft'}});
  legend.onAdd = function() {{ var d = L.DomUtil.create('div'); d.innerHTML = {json.dumps(legend)}; return d; }};
  legend.addTo(map);
  map.on('overlayremove', function() {{ legend.remove(); }});
  map.on('overlayadd', function() {{ legend.addTo(map); }});
}});
"""
    m.get_root().script.add_child(raw_element(js))


def _pct(p: float) -> str:
    return f"{100 * p:g}%"


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


@lru_cache(maxsize=2048)
def _outline_geojson(table_hash: str, table, row: int, level: str) -> dict:
    """A place's outline drawn on the map, simplified once per place (it was simplified
    again for every answer)."""
    from hierloc.geo.boundaries import place_outline

    return _geojson(place_outline(table, row).geometry, level, SIMPLIFY_DEG[level])


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


def prediction_map(pred, table, truth: tuple[float, float] | None = None, height: int = 520,
                   show_probability: bool = True):
    """A folium.Map of a Prediction (see infer.predictor) over its place table."""
    import folium

    m = _new_map(location=[pred.latitude, pred.longitude], zoom_start=4)
    add_world(m, table, getattr(pred, "distribution", None) if show_probability else None)
    rows = {p["level"]: table.get(p["key"]) for p in pred.path}
    bounds = []
    for level, row, o in outline_layers(table, rows):
        name = table.display_name(row) + (" (approximate outline)" if o.approximate else "")
        style = {"color": LEVEL_COLORS[level], "weight": 3 if level != "sub-region" else 2,
                 "fillOpacity": 0.12 if level == "country" else 0.15, "dashArray": "6 6" if o.approximate else None}
        folium.GeoJson(_outline_geojson(table.content_hash(), table, row, level), name=f"{level}: {name}",
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


def batch_map(preds: list, table, truths: list | None = None):
    """One map of many photos: each guess (file name and path in its tooltip), and the true
    location with a dashed great circle where it is known (truths: (lat, lon, ...) or None)."""
    import folium

    m = _new_map(location=[20, 0], zoom_start=2)
    add_world(m, table)
    truths = truths or [None] * len(preds)
    lat_all, lon_all = [], []
    for pred, truth in zip(preds, truths):
        label = html.escape(f"{pred.file}: " + " > ".join(p["name"] or "-" for p in pred.path))
        if truth is not None:
            for seg in great_circle(truth[0], truth[1], pred.latitude, pred.longitude):
                folium.PolyLine(seg, color=TRUTH_COLOR, weight=1.5, dash_array="4 6").add_to(m)
            folium.CircleMarker([truth[0], truth[1]], radius=5, color=TRUTH_COLOR, weight=2, fill=True,
                                fill_color=PHOTO_COLOR, fill_opacity=1, tooltip=f"{html.escape(str(pred.file))}: true location").add_to(m)
            lat_all.append(truth[0])
            lon_all.append(truth[1])
        folium.CircleMarker([pred.latitude, pred.longitude], radius=7, color="#ffffff", weight=2, fill=True,
                            fill_color=LEVEL_COLORS["city"], fill_opacity=1, tooltip=label,
                            class_name="hl-guess").add_to(m)
        lat_all.append(pred.latitude)
        lon_all.append(pred.longitude)
    if lat_all:
        m.fit_bounds([[min(lat_all), min(lon_all)], [max(lat_all), max(lon_all)]], padding=(30, 30), max_zoom=8)
    return m


def place_map(table, row: int, children: list[int] = ()):
    """The Explore tab's map: a place's outline (or marker), its children as dots (row -1:
    the whole world); clicks on the map are posted to the page so that the app can look
    the point up."""
    import folium

    if row < 0:  # the whole Earth: the world and every country's centre
        m = _new_map(location=[20.0, 0.0], zoom_start=2)
    else:
        m = _new_map(location=[float(table.lat_deg[row]), float(table.lon_deg[row])], zoom_start=5)
    add_world(m, table)
    rows = {LEVELS[int(table.level[r])]: r for r in table.ancestors(row)} if row >= 0 else {}
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
    if row >= 0:
        folium.CircleMarker([float(table.lat_deg[row]), float(table.lon_deg[row])], radius=7, color="#ffffff",
                            weight=2, fill=True, fill_color=LEVEL_COLORS[LEVELS[int(table.level[row])]], fill_opacity=1,
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
