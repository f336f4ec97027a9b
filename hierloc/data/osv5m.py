"""OpenStreetView-5M: download from the Hugging Face hub, or read a local copy.

Layout (the dataset repo osv5m/osv5m, and any local copy of it):

    ROOT/train.csv  ROOT/test.csv
    ROOT/images/train/00.zip ... ROOT/images/test/00.zip ...   (photos named {id}.jpg)

Photos are streamed out of the zip shards; nothing is unpacked to disk.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hierloc.images import ImageError, load_image

log = logging.getLogger(__name__)

REPO_ID = "osv5m/osv5m"
SPLITS = ("train", "test")
COLUMNS = ("id", "latitude", "longitude", "country", "region", "sub-region", "city",
           "unique_country", "unique_region", "unique_sub-region", "unique_city")


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be had here; the message says what to do."""


def download(root: str | Path, split: str = "test", shards: list[int] | None = None) -> Path:
    """Fetch {split}.csv and image shards (all, or the given shard numbers) into root."""
    from huggingface_hub import hf_hub_download, list_repo_files

    from hierloc.hub import hub_reachable

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if not hub_reachable():
        raise DatasetUnavailable(
            f"the Hugging Face hub cannot be reached, so {REPO_ID} cannot be downloaded here. "
            f"Download it on a machine with internet (`python -m hierloc data download --root DIR`) "
            f"and copy DIR, keeping its layout ({split}.csv, images/{split}/NN.zip).")
    root = Path(root)
    hf_hub_download(REPO_ID, f"{split}.csv", repo_type="dataset", local_dir=root)
    files = [f for f in list_repo_files(REPO_ID, repo_type="dataset")
             if f.startswith(f"images/{split}/") and f.endswith(".zip")]
    if shards is not None:
        files = [f for f in files if int(Path(f).stem) in set(shards)]
    for f in sorted(files):
        hf_hub_download(REPO_ID, f, repo_type="dataset", local_dir=root)
    return root


@dataclass
class Photo:
    id: str
    image: object          # PIL image, or None when it could not be read
    error: str | None
    row: pd.Series


class OSV5M:
    """One split of a local OSV-5M copy, optionally limited and filtered by country."""

    def __init__(self, root: str | Path, split: str = "train", limit: int | None = None,
                 countries: list[str] | None = None):
        self.root = Path(root)
        self.split = split
        csv = self.root / f"{split}.csv"
        if not csv.exists():
            raise DatasetUnavailable(f"{csv} not found: download OSV-5M with `python -m hierloc data download "
                                     f"--root {self.root} --split {split}` or point --root at a local copy")
        header = pd.read_csv(csv, nrows=0).columns
        missing = [c for c in ("id", "latitude", "longitude") if c not in header]
        if missing:
            raise DatasetUnavailable(f"{csv} lacks the columns {missing}: is it an OSV-5M CSV?")
        use = [c for c in COLUMNS if c in header]
        df = pd.read_csv(csv, usecols=use, dtype={"id": str}, keep_default_na=False)
        if countries:
            df = df[df["country"].isin(set(countries))]
        if limit:
            df = df.head(int(limit))
        self.rows = df.reset_index(drop=True)
        self._index: dict[str, tuple[Path, str]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def shard_index(self) -> dict[str, tuple[Path, str]]:
        """Photo id -> (zip shard, member name), read from the shards' directories."""
        if self._index is None:
            folder = self.root / "images" / self.split
            zips = sorted(folder.glob("*.zip"))
            if not zips:
                raise DatasetUnavailable(f"no image shards in {folder} (expected {folder}/NN.zip)")
            index = {}
            for z in zips:
                with zipfile.ZipFile(z) as zf:
                    for name in zf.namelist():
                        if name.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                            index[Path(name).stem] = (z, name)
            self._index = index
        return self._index

    def iter_photos(self, skip: set[str] | None = None) -> Iterator[Photo]:
        """Photos in shard order (each zip opened once); ids in ``skip`` are not read."""
        index = self.shard_index()
        by_zip: dict[Path, list[int]] = {}
        for i, pid in enumerate(self.rows["id"]):
            if skip and pid in skip:
                continue
            loc = index.get(pid)
            if loc is None:
                yield Photo(pid, None, "not found in any image shard", self.rows.iloc[i])
                continue
            by_zip.setdefault(loc[0], []).append(i)
        for z, rows in by_zip.items():
            with zipfile.ZipFile(z) as zf:
                for i in rows:
                    row = self.rows.iloc[i]
                    try:
                        img = load_image(zf.read(index[row["id"]][1]))
                        yield Photo(row["id"], img, None, row)
                    except ImageError as exc:
                        yield Photo(row["id"], None, str(exc), row)
