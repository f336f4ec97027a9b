"""Where the time of an answer's figures goes: the map (folium) and the atlas view of the
disk, per example photo, with the map built as before (folium.Element compiling the
inlined Leaflet and the world's outlines as Jinja templates, every outline simplified for
every answer) and as now; the pages compared, their random element ids aside.

    python benchmarks/bench_figures.py [--model preview|zero-shot-random] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time


def _page(html: str) -> str:
    return re.sub(r"[0-9a-f]{32}", "ID", html)


def main(argv=None) -> int:
    import folium

    from hierloc.infer.predictor import Predictor, preview_engine, zeroshot_engine
    from hierloc.paths import ASSETS_DIR
    from hierloc.ui import handlers as H
    from hierloc.viz import map as M

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="preview", choices=["preview", "zero-shot-random"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    engine = preview_engine() if args.model == "preview" else zeroshot_engine(random_weights=True, fast="off")
    p = Predictor(engine)
    photos = sorted((ASSETS_DIR / "examples").glob("*.jpg"))
    preds = [p.predict(f) for f in photos]

    def before():  # the map as it was built before
        raw, outline = M.raw_element, M._outline_geojson
        M.raw_element = folium.Element
        M._outline_geojson = lambda h, t, row, level: M._geojson(
            __import__("hierloc.geo.boundaries", fromlist=["x"]).place_outline(t, row).geometry, level,
            M.SIMPLIFY_DEG[level])
        return raw, outline

    out = {"model": args.model, "photos": len(photos), "runs": args.runs}
    for name in ("before", "now"):
        saved = before() if name == "before" else None
        M.to_iframe(M.prediction_map(preds[0], p.table))  # warm-up (outlines, caches)
        maps, views, pages = [], [], []
        for _ in range(args.runs):
            for pred in preds:
                t0 = time.perf_counter()
                pages.append(_page(M.to_iframe(M.prediction_map(pred, p.table))))
                t1 = time.perf_counter()
                H.answer_view(p, pred.disk["atlas"])
                maps.append((t1 - t0) * 1000)
                views.append((time.perf_counter() - t1) * 1000)
        if saved:
            M.raw_element, M._outline_geojson = saved
        out[name] = {"map_ms": round(statistics.median(maps), 1), "disk_ms": round(statistics.median(views), 1),
                     "pages": pages[:len(preds)]}
    out["same_pages"] = out["before"].pop("pages") == out["now"].pop("pages")
    print(json.dumps(out, indent=2) if args.json else out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
