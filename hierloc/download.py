"""`python -m hierloc download`: fetch ahead of time what a profile needs.

CLIP ViT-L/14's weights (1.7 GB) are the one big download. :func:`fetch_clip` fetches them
with a :class:`Progress` that anyone can watch (the page on a Space's first start, a
progress bar on the command line): the bytes in the hub cache's folder for the repo,
partial files included, against the repo's file sizes.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CLIP_PATTERNS = ["*.json", "*.txt", "model.safetensors"]


class DownloadError(RuntimeError):
    pass


@dataclass
class Progress:
    """How far a download has come. stage: waiting | downloading | loading | ready | failed."""

    stage: str = "waiting"
    done_bytes: int = 0
    total_bytes: int = 0
    started: float = field(default_factory=time.time)
    error: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the speed so far (None before anything arrived)."""
        spent = time.time() - self.started
        if not self.total_bytes or self.done_bytes <= 0 or spent <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / (self.done_bytes / spent))


def repo_bytes(repo_id: str, patterns=CLIP_PATTERNS) -> int:
    """Total size of the files of a hub repo that match the patterns (0 when unknown)."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, files_metadata=True)
        return int(sum(s.size or 0 for s in info.siblings
                       if any(fnmatch.fnmatch(s.rfilename, p) for p in patterns)))
    except Exception as exc:  # the size is only for the progress bar
        log.debug("size of %s unknown: %s", repo_id, exc)
        return 0


def cache_bytes(repo_id: str) -> int:
    """Bytes of a repo in the local hub cache, partial downloads included."""
    from huggingface_hub import constants

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "blobs")
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _snapshot_download(repo_id: str, allow_patterns) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, allow_patterns=allow_patterns)


def fetch_clip(progress: Progress | None = None, bar: bool = False, poll_s: float = 0.5) -> str:
    """Download CLIP ViT-L/14 (OpenAI) into the hub cache, reporting into ``progress``
    (and a progress bar on the terminal with bar=True). Returns the snapshot folder."""
    from hierloc.infer.zeroshot import CLIP_REPO

    progress = progress or Progress()
    progress.stage, progress.started = "downloading", time.time()
    progress.total_bytes = repo_bytes(CLIP_REPO) or progress.total_bytes
    stop = threading.Event()
    tq = None
    if bar:
        from tqdm import tqdm

        tq = tqdm(total=progress.total_bytes or None, unit="B", unit_scale=True, desc=f"downloading {CLIP_REPO}")

    def watch():
        while not stop.wait(poll_s):
            progress.done_bytes = cache_bytes(CLIP_REPO)
            if tq is not None:
                tq.n = min(progress.done_bytes, tq.total or progress.done_bytes)
                tq.refresh()

    watcher = threading.Thread(target=watch, daemon=True, name="hierloc-download-progress")
    watcher.start()
    try:
        path = _snapshot_download(CLIP_REPO, CLIP_PATTERNS)
    except Exception as exc:
        progress.stage, progress.error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        stop.set()
        watcher.join(timeout=2)
        if tq is not None:
            tq.close()
    progress.done_bytes = max(progress.done_bytes, progress.total_bytes, cache_bytes(CLIP_REPO))
    progress.total_bytes = progress.total_bytes or progress.done_bytes
    return path


def download(what: str = "zero-shot") -> dict:
    from hierloc.hub import hub_reachable

    if what == "preview":
        from hierloc.model.backbones import load_backbone

        load_backbone("efficientnet-lite0")
        return {"preview": "ready: everything ships in the installed packages"}
    if what == "zero-shot":
        from hierloc.data.place_features import location_features
        from hierloc.geo.places import default_places
        from hierloc.infer.zeroshot import CLIP_REPO, gallery_features

        out = {}
        if not hub_reachable():
            raise DownloadError(
                f"no network: the Hugging Face hub cannot be reached, so {CLIP_REPO} (about 1.7 GB) cannot "
                f"be downloaded. Run this command where there is internet; the offline preview works meanwhile.")
        path = fetch_clip(bar=True)
        out["clip"] = path
        from hierloc.infer.fast_encoder import FastUnavailable, build_fast, fast_mode, model_dir
        from hierloc.infer.zeroshot import load_image_path

        if fast_mode() == "off":
            out["fast_image_path"] = "not built (HIERLOC_FAST=off)"
        else:  # the CPU's fast image path, built once (about a minute)
            try:
                eager = load_image_path()
                build_fast(eager)
                out["fast_image_path"] = str(model_dir(eager))
            except FastUnavailable as exc:
                out["fast_image_path"] = f"not built: {exc}"
        feats = location_features(default_places())  # GeoCLIP place features, cached (offline)
        out["place_features"] = sum(len(f) for f in feats)
        out["gallery_features"] = len(gallery_features())  # the decoder's support points, cached
        return out
    if what.startswith("open_clip:"):
        from hierloc.model.backbones import BackboneUnavailable, load_backbone

        try:
            load_backbone(what)
        except BackboneUnavailable as exc:
            raise DownloadError(str(exc)) from None
        return {"backbone": what}
    from hierloc.model.checkpoint import CheckpointError, resolve_checkpoint

    if not hub_reachable():
        raise DownloadError(f"no network: cannot download {what!r} from the Hugging Face hub here")
    try:
        return {"checkpoint": str(resolve_checkpoint(what))}
    except CheckpointError as exc:
        raise DownloadError(str(exc)) from None
