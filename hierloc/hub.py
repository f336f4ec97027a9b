"""The Hugging Face hub: a quick reachability probe and cache checks, so that an offline
machine gets a clear answer in seconds instead of a minute of retries."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

HUB_HOST = "huggingface.co"


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the hub answers a TCP connection (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}").split("://", 1)[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout_s):
            return True
    except OSError:
        return False


def cached_file(repo_id: str, filenames: list[str]) -> str | None:
    """Path of the first of ``filenames`` already in the local hub cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        path = try_to_load_from_cache(repo_id, name)
        if isinstance(path, str) and os.path.exists(path):
            return path
    return None


def open_clip_weights_cached(model_name: str, tag: str) -> bool:
    """True when open_clip's weights for (model, tag) are in the local hub cache."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    repo = (cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return False
    return cached_file(repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]) is not None
