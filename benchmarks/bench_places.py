"""Place hierarchy figures: build and load times, asset sizes, boundary match rate and
reverse-lookup throughput (100,000 points, both modes). Median of --runs runs.

    python benchmarks/bench_places.py [--runs 5] [--points 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def timed(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from hierloc.geo.boundaries import link_with_report
    from hierloc.geo.build import build_from_geonames
    from hierloc.geo.places import PlaceTable
    from hierloc.geo.reverse import ReverseGeocoder
    from hierloc.paths import ADMIN1_FILE, COUNTRIES_FILE, PLACES_FILE

    build_s, built = timed(lambda: build_from_geonames(), max(1, args.runs // 2))
    load_s, table = timed(lambda: PlaceTable.load(PLACES_FILE), args.runs)
    _, report = link_with_report(built)
    rng = np.random.default_rng(0)
    # Half the points near real cities (jittered by ~20 km), half uniform over the globe.
    city = table.level_slice("city")
    pick = rng.integers(city.start, city.stop, args.points // 2)
    lat = np.concatenate([table.lat_deg[pick] + rng.normal(0, 0.2, len(pick)),
                          rng.uniform(-60, 75, args.points - len(pick))]).clip(-90, 90)
    lon = np.concatenate([table.lon_deg[pick] + rng.normal(0, 0.2, len(pick)),
                          rng.uniform(-180, 180, args.points - len(pick))])
    lon = ((lon + 180) % 360) - 180
    res = {"machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
           "runs": args.runs, "counts": table.counts(), "build_s": round(build_s, 2),
           "load_s": round(load_s, 3),
           "sizes_mb": {p.name: round(p.stat().st_size / 2**20, 2) for p in (PLACES_FILE, ADMIN1_FILE, COUNTRIES_FILE)},
           "boundaries": report.as_dict(), "lookup": {}}
    for mode in ("polygon", "benchmark"):
        init_s, geo = timed(lambda: ReverseGeocoder(table, mode), 1)
        geo.lookup(lat[:1000], lon[:1000])
        sec, _ = timed(lambda: geo.lookup(lat, lon), args.runs)
        res["lookup"][mode] = {"init_s": round(init_s, 2), "points": args.points,
                               "seconds": round(sec, 3), "points_per_s": int(args.points / sec)}
    print(json.dumps(res, indent=2) if args.json else json.dumps(res))


if __name__ == "__main__":
    main()
