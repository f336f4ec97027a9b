"""Shared fixtures. Tests run offline on the CPU; markers: slow, browser, network, gpu."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def places():
    from hierloc.geo.places import default_places

    return default_places()


@pytest.fixture(scope="session")
def labelled_rows():
    """The six fully labelled OSV-5M example photos (country, region, sub-region, city)."""
    import pandas as pd

    df = pd.read_csv(DATA / "osv5m_labels.csv", keep_default_na=False)
    return df[df["latitude"] != ""].assign(
        latitude=lambda d: d["latitude"].astype(float), longitude=lambda d: d["longitude"].astype(float))
