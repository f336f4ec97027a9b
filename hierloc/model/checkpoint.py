"""Checkpoint folders: save and load a HierLoc model with the places it was trained on.

A checkpoint is a folder (or a Hugging Face model repo with the same files):

    config.json                 format version, every ModelConfig argument, the curvature
                                convention, backbone name and tag, place-table hash
    model.safetensors           trainable tensors only (never the frozen backbone)
    places.parquet              the place table the model was trained with
    place_features.safetensors  fixed per-place inputs (mean photo, text, location
                                features), present when the model uses them
    support.safetensors         the training photos a model trained on your own photos
                                attends over (their features, places and GPS)
    your_photos.safetensors     the photos a shipped model was sharpened with (their
                                location features, places and GPS)

A tensor file over MAX_FILE_BYTES is written as shards, following the Hugging Face
convention (model-00001-of-00003.safetensors ... plus model.safetensors.index.json, whose
"weight_map" names the shard of each stored tensor), so that a repository holding a
checkpoint stays under the 10 MB per file that a Space accepts without LFS. A tensor
larger than a shard is stored as row blocks named "NAME@rows=START:STOP" and joined again
on load.

Nothing is unpickled: safetensors, parquet and JSON only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import torch

from hierloc import __version__
from hierloc.geo.places import PlaceTable
from hierloc.model.config import CURVATURE_CONVENTION, ModelConfig
from hierloc.model.hierloc import HierLoc, level_latlon

log = logging.getLogger(__name__)

FORMAT = "hierloc-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json", "places.parquet",
                    "place_features*.safetensors", "place_features.safetensors.index.json",
                    "support*.safetensors", "support.safetensors.index.json",
                    "your_photos*.safetensors", "your_photos.safetensors.index.json"]
MAX_FILE_BYTES = 9 * 2 ** 20
"""Largest tensor file written whole (under a Space's 10 MB per file, headers included)."""
ROWS = "@rows="


REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""What a Hugging Face repo id looks like ("owner/name"); anything else is a local path."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with a message for a person."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors by name, as plain contiguous CPU tensors."""
    return {n: p.detach().cpu().contiguous().as_subclass(torch.Tensor)
            for n, p in model.named_parameters() if p.requires_grad}


def _row_blocks(tensors: dict[str, torch.Tensor], max_bytes: int) -> dict[str, torch.Tensor]:
    """Tensors larger than max_bytes cut into row blocks named NAME@rows=START:STOP."""
    out = {}
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if nbytes <= max_bytes or t.dim() == 0 or t.shape[0] < 2:
            out[name] = t
            continue
        rows = max(1, max_bytes // max(1, nbytes // t.shape[0]))
        for start in range(0, t.shape[0], rows):
            out[f"{name}{ROWS}{start}:{min(start + rows, t.shape[0])}"] = t[start:start + rows].contiguous()
    return out


def save_tensors(tensors: dict[str, torch.Tensor], folder: Path, stem: str,
                 max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """STEM.safetensors, or shards + STEM.safetensors.index.json when larger than max_bytes.
    Returns the file names written."""
    from safetensors.torch import save_file

    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total <= max_bytes:
        save_file(tensors, str(folder / f"{stem}.safetensors"))
        return [f"{stem}.safetensors"]
    blocks = _row_blocks(tensors, max_bytes)
    shards, cur, size = [], {}, 0
    for name, t in blocks.items():
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name], size = t, size + nbytes
    shards.append(cur)
    names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, shard in zip(names, shards):
        save_file(shard, str(folder / fname))
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return names + [f"{stem}.safetensors.index.json"]


def has_tensors(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.safetensors").exists() or (folder / f"{stem}.safetensors.index.json").exists()


def load_tensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    """What save_tensors wrote (whole or sharded), row blocks joined again."""
    from safetensors.torch import load_file

    single = folder / f"{stem}.safetensors"
    if single.exists():
        return load_file(str(single))
    index_path = folder / f"{stem}.safetensors.index.json"
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{folder} has no readable {stem}.safetensors or {index_path.name} ({exc})") from None
    raw = {}
    for fname in sorted(set(weight_map.values())):
        if not (folder / fname).exists():
            raise CheckpointError(f"{folder} lacks the shard {fname} that {index_path.name} names")
        raw.update(load_file(str(folder / fname)))
    if set(raw) != set(weight_map):
        raise CheckpointError(f"the shards in {folder} do not hold the tensors {index_path.name} lists")
    out, parts = {}, {}
    for name, t in raw.items():
        if ROWS in name:
            base, span = name.split(ROWS)
            parts.setdefault(base, []).append((int(span.split(":")[0]), t))
        else:
            out[name] = t
    for base, blocks in parts.items():
        out[base] = torch.cat([t for _, t in sorted(blocks, key=lambda b: b[0])])
    return out


def save_checkpoint(model: HierLoc, places: PlaceTable, folder: str | Path, extra: dict | None = None,
                    max_bytes: int = MAX_FILE_BYTES) -> Path:
    """Write a checkpoint folder atomically (a temporary folder renamed into place)."""
    folder = Path(folder)
    counts = tuple(places.counts().values())
    if counts != model.config.num_places:
        raise CheckpointError(f"the place table has {counts} places per level but the model "
                              f"was built for {model.config.num_places}")
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "hierloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model.config.to_dict(),
        "curvature_convention": CURVATURE_CONVENTION,
        "backbone": {"name": model.config.backbone, "tag": model.config.backbone_tag},
        "places": {"hash": places.content_hash(), "source": places.source, "counts": places.counts()},
        **(extra or {}),
    }
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    save_tensors(trainable_state(model), tmp, "model", max_bytes)
    feats = model.place_feature_tensors()
    if feats:
        save_tensors({k: v.detach().cpu().half().contiguous() for k, v in feats.items()}, tmp, "place_features",
                     max_bytes)
    if model.config.extra.get("support_source") == "photos":  # the training photos it remembers
        sup = model.support_inputs()
        tensors = {"unit": sup["unit"].half(), "latlon": sup["latlon"].double(), "kind": sup["kind"],
                   **{f"ancestor_{lv}": a for lv, a in enumerate(sup["ancestors"])}}
        save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp, "support", max_bytes)
    if model.remembers_your_photos:  # the photos a shipped model was sharpened with
        mem = model.your_memory
        save_tensors({"unit": mem["unit"].half().contiguous(), "latlon": mem["latlon"].double().contiguous(),
                      **{f"ancestor_{lv}": a.contiguous() for lv, a in enumerate(mem["ancestors"])}},
                     tmp, "your_photos", max_bytes)
    places.save(tmp / "places.parquet")
    if folder.exists():
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)
    return folder


def resolve_checkpoint(source: str | Path, revision: str | None = None) -> Path:
    """A local folder, or a Hugging Face repo id ("owner/name") downloaded to the hub cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if not REPO_ID.fullmatch(text):
        raise CheckpointError(f"checkpoint folder {source} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except Exception as exc:  # offline, missing repo, no permission: say which and what to do
        raise CheckpointError(
            f"could not fetch the checkpoint {text!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). With no internet, fetch it on a machine that has "
            f"it (`python -m hierloc download {text}`) and copy the folder, or pass a local folder."
        ) from None


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder} is not a HierLoc checkpoint: it has no config.json")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a HierLoc checkpoint config (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')}; this HierLoc "
                              f"reads version {FORMAT_VERSION}")
    return meta


def load_checkpoint(source: str | Path, places: PlaceTable | None = None, device: str | torch.device = "cpu",
                    revision: str | None = None) -> tuple[HierLoc, PlaceTable, dict]:
    """Load (model in eval mode, its place table, config.json) from a folder or repo id.

    If ``places`` is given it must be the table the model was trained with (same hash).
    """
    folder = resolve_checkpoint(source, revision)
    meta = read_config(folder)
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}/config.json does not describe a valid model: {exc}") from None
    table = PlaceTable.load(folder / "places.parquet")
    want = meta["places"]["hash"]
    if table.content_hash() != want:
        raise CheckpointError(f"{folder}/places.parquet has hash {table.content_hash()[:12]}, but "
                              f"config.json says the model was trained on {want[:12]}")
    if places is not None and places.content_hash() != want:
        raise CheckpointError(
            f"place table mismatch: the checkpoint was trained on places {want[:12]} "
            f"({meta['places'].get('source')}, {meta['places'].get('counts')}), the given table is "
            f"{places.content_hash()[:12]} ({places.source}, {places.counts()})")
    feats = {}
    if config.place_features:
        if not has_tensors(folder, "place_features"):
            raise CheckpointError(f"{folder} lacks place_features.safetensors, which its config needs")
        raw = load_tensors(folder, "place_features")
        for name, _ in config.place_features:
            feats[name] = [raw[f"feat_{name}_{lv}"].float() for lv in range(4)]
    support = None
    if config.photo_head == "support" and config.extra.get("support_source") == "photos":
        if not has_tensors(folder, "support"):
            raise CheckpointError(f"{folder} lacks support.safetensors (the training photos it answers from)")
        from hierloc.model.support import support_hash

        raw = load_tensors(folder, "support")
        support = {"unit": raw["unit"].float(), "latlon": raw["latlon"], "kind": raw["kind"],
                   "ancestors": [raw[f"ancestor_{lv}"] for lv in range(4)]}
        support["hash"] = support_hash(support["latlon"].numpy(), support["ancestors"][3].numpy())
        if len(support["unit"]) != config.support_points:
            raise CheckpointError(f"{folder}/support.safetensors holds {len(support['unit'])} photos, "
                                  f"its config says {config.support_points}")
    elif config.photo_head == "support":
        from hierloc.model.support import support_for_table

        try:
            support = support_for_table(table)
        except Exception as exc:
            raise CheckpointError(f"could not build the support points {folder} attends over "
                                  f"({type(exc).__name__}: {exc})") from None
        want_support = config.extra.get("support_hash")
        if want_support and support["hash"] != want_support:
            raise CheckpointError(f"the support points built here (hash {support['hash'][:12]}) differ from those "
                                  f"{folder} was trained with ({want_support[:12]}): another geoclip gallery?")
        if len(support["unit"]) != config.support_points:
            raise CheckpointError(f"{folder} was trained with {config.support_points} support points, "
                                  f"{len(support['unit'])} are built here")
    model = HierLoc(config, [torch.from_numpy(a) for a in level_latlon(table)], feats, support,
                    init_anchors=False)  # every place is overwritten from the file below
    if not has_tensors(folder, "model"):
        raise CheckpointError(f"{folder} has no model.safetensors (nor model.safetensors.index.json)")
    state = load_tensors(folder, "model")
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(state) & set(expected) if state[n].shape != expected[n].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {names[:6]}{'...' if len(names) > 6 else ''}" for label, names in
                           (("missing in file", missing), ("not in model", unexpected),
                            ("shape differs", [f"{n} file {tuple(state[n].shape)} vs model {tuple(expected[n].shape)}" for n in wrong]))
                           if names)
        raise CheckpointError(f"{folder}/model.safetensors does not match its config.json: {detail}")
    with torch.no_grad():
        for n, p in expected.items():
            p.copy_(state[n])
    if "your_photos" in config.extra:
        if not has_tensors(folder, "your_photos"):
            raise CheckpointError(f"{folder} lacks your_photos.safetensors, the photos its config says it remembers")
        raw = load_tensors(folder, "your_photos")
        try:
            model.attach_your_photos({"unit": raw["unit"].float(), "latlon": raw["latlon"],
                                      "ancestors": [raw[f"ancestor_{lv}"] for lv in range(4)]},
                                     config.extra["your_photos"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{folder}/your_photos.safetensors does not match its places: {exc}") from None
    return model.to(device).eval(), table, meta
