"""Where HierLoc finds its shipped assets and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
ASSETS_DIR = Path(os.environ.get("HIERLOC_ASSETS", REPO_DIR / "assets"))
CHECKPOINTS_DIR = Path(os.environ.get("HIERLOC_CHECKPOINTS", REPO_DIR / "checkpoints"))

PLACES_FILE = ASSETS_DIR / "places" / "geonames.parquet"
ADMIN1_FILE = ASSETS_DIR / "boundaries" / "admin1.parquet"
COUNTRIES_FILE = ASSETS_DIR / "boundaries" / "countries.parquet"


def cache_dir() -> Path:
    """The user cache folder (HIERLOC_CACHE, else ~/.cache/hierloc), created on demand."""
    root = Path(os.environ.get("HIERLOC_CACHE", Path.home() / ".cache" / "hierloc"))
    root.mkdir(parents=True, exist_ok=True)
    return root
