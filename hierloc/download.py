"""`python -m hierloc download`: fetch ahead of time what a profile needs."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    pass


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
        from huggingface_hub import snapshot_download

        path = snapshot_download(CLIP_REPO, allow_patterns=["*.json", "*.txt", "model.safetensors"])
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
