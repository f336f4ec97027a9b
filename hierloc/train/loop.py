"""The training loop: a function, resumable, single process or DistributedDataParallel.

Run folder (TrainConfig.out):
    config.json          the TrainConfig of the run (+ git revision, hierarchy hash)
    last/                the latest checkpoint (atomic; see model.checkpoint)
    trainer_state.pt     optimiser state, step and RNG for resuming (tensors only)
    log.jsonl            one JSON line per log step
Multi-GPU: `torchrun --nproc_per_node N -m hierloc train ...`; each process takes a
disjoint share of every batch, gradients are all-reduced by DDP, rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hierloc import LEVELS
from hierloc.data.geoclip_space import CELL_DEG, HOLDOUT_SHARE
from hierloc.geo.places import PlaceTable
from hierloc.manifold import lorentz as L
from hierloc.model.config import ModelConfig
from hierloc.model.hierloc import HierLoc, level_latlon
from hierloc.model.checkpoint import load_checkpoint, save_checkpoint
from hierloc.train.config import TrainConfig
from hierloc.train.optim import HybridOptimizer

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    table: PlaceTable
    train: object          # PhotoSet
    val: object            # PhotoSet
    test: object | None    # PhotoSet (GeoSynth only)
    targets: torch.Tensor  # (N_train, 4) local indices per level
    place_features: dict   # name -> per level (N_l, dim)
    feat_dim: int
    notes: dict
    photos: object = None  # GeoClipPhotos: fresh photos at every step (data = geoclip)


GEOCLIP_EPOCH = 100_000
"""Photos in one 'epoch' of GeoCLIP-space training (its photos are drawn fresh)."""


def targets_of(table: PlaceTable, photos) -> torch.Tensor:
    """(N, 4) local index of each photo's place per level; -1 where the key is absent."""
    out = np.full((len(photos), 4), -1, dtype=np.int64)
    for lv, level in enumerate(LEVELS):
        sl = table.level_slice(lv)
        index = {k: i for i, k in enumerate(table.key[sl])}
        out[:, lv] = [index.get(k, -1) for k in photos.keys[level]]
    return torch.from_numpy(out)


def _photos_from_osv5m(cfg: TrainConfig):
    from hierloc.data.features import FeatureCache
    from hierloc.data.osv5m import OSV5M
    from hierloc.data.synthetic import PhotoSet

    ids, feats = FeatureCache(cfg.features).load()
    ds = OSV5M(cfg.osv5m_root, "train", limit=cfg.limit or None, countries=list(cfg.countries) or None)
    rows = ds.rows.set_index("id").reindex(ids)
    keep = rows["latitude"].notna().to_numpy()
    rows = rows[keep]
    keys = {lv: rows[f"unique_{lv}"].astype(str).to_numpy() for lv in LEVELS}
    names = {lv: rows[lv].astype(str).replace("nan", "").to_numpy() for lv in LEVELS}
    return PhotoSet(np.asarray(ids)[keep], feats[torch.as_tensor(keep)].float(), rows["latitude"].to_numpy(float),
                    rows["longitude"].to_numpy(float), keys, names)


def prepare_geoclip(cfg: TrainConfig) -> TrainData:
    """GeoCLIP space: the offline hierarchy, photos drawn fresh from GeoCLIP's location
    encoder (train cells only), validation photos at the calibrated noise level."""
    from hierloc.data.geoclip_space import GeoClipPhotos, mean_location_features
    from hierloc.data.place_features import location_features
    from hierloc.geo.places import default_places

    table = default_places()
    photos = GeoClipPhotos(table, cfg.locations, "train", cfg.noise_max)
    val = photos.photo_set(cfg.val_photos, seed=cfg.seed + 1_000_003, level=1.0)
    feats: dict = {}
    for name in cfg.place_features:
        if name == "location":
            feats["location"] = location_features(table)
        elif name == "image":  # the mean pseudo-photo of each place, noise-free
            feats["image"] = mean_location_features(table, cfg.locations, cfg.place_feature_photos,
                                                    seed=cfg.seed, encoder=photos.encoder)
        else:
            raise ValueError(f"place feature {name!r} cannot be made in GeoCLIP space (use location, image)")
    notes = {"geoclip": {"locations": cfg.locations, "noise_max": cfg.noise_max,
                         "noise_model": dataclasses.asdict(photos.noise),
                         "holdout": {"cell_deg": CELL_DEG, "share": HOLDOUT_SHARE}}}
    return TrainData(table, None, val, None, None, feats, 512, notes, photos)


def prepare_data(cfg: TrainConfig) -> TrainData:
    from hierloc.data.place_features import location_features, mean_image_features
    from hierloc.geo.build import table_from_points

    if cfg.data == "geoclip":
        return prepare_geoclip(cfg)
    test = None
    notes: dict = {}
    if cfg.data == "synthetic":
        from hierloc.data.synthetic import GeoSynthConfig, make_geosynth

        scfg = GeoSynthConfig(**cfg.synth)
        photos, test = make_geosynth(scfg)
        notes["geosynth"] = scfg.to_dict()
    else:
        photos = _photos_from_osv5m(cfg)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(photos))
    n_val = min(cfg.val_photos, len(photos) // 10)
    val, train = photos.subset(perm[:n_val]), photos.subset(np.sort(perm[n_val:]))
    pts, keys = train.points_frame()
    table = table_from_points(pts, source="geosynth" if cfg.data == "synthetic" else "osv5m", keys=keys)
    try:
        from hierloc.geo.boundaries import link_boundaries

        table = link_boundaries(table)
    except FileNotFoundError as exc:  # outlines are for the map only
        log.warning("no boundaries linked: %s", exc)
    targets = targets_of(table, train)
    feats: dict = {}
    for name in cfg.place_features:
        if name == "image":
            city = table.level_slice("city")
            feats["image"] = mean_image_features(table, targets[:, 3].numpy() + city.start, train.feats)
        elif name == "location":
            feats["location"] = location_features(table)
        elif name == "text":
            from hierloc.data.place_features import text_features
            from hierloc.model.backbones import load_backbone

            backbone = load_backbone(cfg.backbone)
            if not backbone.has_text:
                log.warning("backbone %s has no text tower: text place features skipped", cfg.backbone)
                continue
            feats["text"] = text_features(table, backbone)
    return TrainData(table, train, val, test, targets, feats, train.feats.shape[1], notes)


def build_model(cfg: TrainConfig, data: TrainData) -> HierLoc:
    mcfg = ModelConfig(
        feat_dim=data.feat_dim, num_places=tuple(data.table.counts().values()), embed_dim=cfg.embed_dim,
        hidden_dim=cfg.hidden_dim, dropout=cfg.dropout, geometry=cfg.geometry, attention=cfg.attention,
        curvature=cfg.curvature, learn_curvature=cfg.learn_curvature,
        place_features=tuple((n, data.place_features[n][0].shape[1]) for n in cfg.place_features
                             if n in data.place_features),
        kernel=cfg.kernel, tau_init=cfg.tau_init, lambda_init=cfg.lambda_init,
        sigma_init_km=cfg.sigma_init_km, betas=cfg.betas, backbone=cfg.backbone,
        backbone_tag=cfg.backbone_tag, seed=cfg.seed, extra=data.notes)
    return HierLoc(mcfg, [torch.from_numpy(a) for a in level_latlon(data.table)], data.place_features)


PCA_INIT_RADIUS = 3.0
"""Median distance from the origin of the cities' points (and of clean photos') after pca_init."""


@torch.no_grad()
def pca_init(model: HierLoc, data: TrainData, radial: bool = True, anchor_norm: float = 0.01) -> dict:
    """Start the photo head and the place encoder as one and the same linear map, so that
    training starts from 'a photo is near the places its feature resembles' rather than
    from noise: tangent = s P (f - mu), with P the top embed_dim principal directions of
    the places' mean-photo features (centred on their mean mu), s putting the cities at
    PCA_INIT_RADIUS. Each MLP is made exactly linear with GELU(x) - GELU(-x) = x (hidden
    = 2 embed_dim, first layer [sP; -sP], second [I, -I]); the anchors start near the
    origin, so a place's position is its features' at first. Needs the "image" place
    feature, the photo features' space (feat_dim) and no dropout. Returns what it set.

    radial: each anchor starts along its place's own feature direction at the level's
    anchor norm (ModelConfig.anchor_norms, the paper's countries-near-the-centre init), so
    every place starts that much further out than its features alone would put it;
    otherwise the anchors start at the origin (anchor_norm) in their random directions."""
    c = model.config
    D, H = c.embed_dim, c.hidden_dim
    if H != 2 * D or "image" not in model.feature_names or c.dropout:
        raise ValueError("pca_init needs hidden_dim = 2 embed_dim, the image place feature and dropout 0")
    img = torch.cat(data.place_features["image"]).double()  # (N, F) every level's mean photo
    if img.shape[1] != c.feat_dim:
        raise ValueError("pca_init needs place image features in the photos' space")
    mu = img.mean(0)
    x = img - mu
    _, _, vh = torch.linalg.svd(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(c.seed))[:50_000]],
                                full_matrices=False)
    P = vh[:D]  # (D, F)
    city = data.place_features["image"][3].double()
    scale = PCA_INIT_RADIUS / float(((city - mu) @ P.T).norm(dim=1).median())

    def make_linear(mlp, blocks: list[torch.Tensor], mean: torch.Tensor):
        W = torch.cat(blocks, 1) * scale  # (D, F_in)
        b = -(W @ mean)
        lin1, lin2 = mlp[0], mlp[-1]
        lin1.weight.copy_(torch.cat([W, -W]).float())
        lin1.bias.copy_(torch.cat([b, -b]).float())
        lin2.weight.copy_(torch.cat([torch.eye(D), -torch.eye(D)], 1))
        lin2.bias.zero_()

    make_linear(model.photo_mlp, [P], mu)
    model.log_alpha_img.zero_()
    blocks, mean = [], []
    for name, dim in c.place_features:
        blocks.append(P if name == "image" else torch.zeros(D, dim, dtype=torch.float64))
        mean.append(mu if name == "image" else torch.zeros(dim, dtype=torch.float64))
    make_linear(model.place_mlp, blocks, torch.cat(mean))
    model.log_alpha_node.zero_()
    for lv in range(4):
        a = getattr(model, f"anchor_{lv}")
        if radial:
            t = (data.place_features["image"][lv].double() - mu) @ P.T  # the place's own direction
            norm = c.anchor_norms[lv]
        else:
            t, norm = model.anchor_tangent(lv).double(), anchor_norm
        t = (norm * t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)).float()
        a.copy_(L.exp0(t, c.curvature) if model.manifold_anchors else t)
    model.train()
    return {"scale": round(scale, 4), "radius": PCA_INIT_RADIUS, "radial": radial,
            "anchor_norms": list(c.anchor_norms) if radial else anchor_norm}


class NegativeSampler:
    """Which places of a level one training step scores, when a level is too large to
    score whole on a CPU (TrainConfig.max_negatives): every place that is a photo's true
    place or a sibling of one (same parent: the near, hard negatives that geo-weighting
    is about), plus a uniform sample of the rest, weighted by (rest size / sample size)
    so that the sum over negatives stays an unbiased estimate of the full one."""

    def __init__(self, table: PlaceTable, max_negatives: int):
        self.max_negatives = int(max_negatives)
        self.sizes = list(table.counts().values())
        self.children = []  # per level: None (scored whole) or (order by parent, CSR starts)
        for lv, n in enumerate(self.sizes):
            if not self.max_negatives or n <= self.max_negatives or lv == 0:
                self.children.append(None)
                continue
            parent = table.parent_within_level(lv)
            order = np.argsort(parent, kind="stable")
            starts = np.searchsorted(parent[order], np.arange(self.sizes[lv - 1] + 1))
            self.children.append((order, starts))

    @property
    def active(self) -> bool:
        return any(c is not None for c in self.children)

    def sample(self, targets: torch.Tensor, gen: torch.Generator):
        """targets (B, 4) local indices -> per level None (all places) or (rows, log_w,
        targets into rows)."""
        out = []
        tg = targets.cpu().numpy()
        for lv, ch in enumerate(self.children):
            if ch is None:
                out.append(None)
                continue
            order, starts = ch
            n = self.sizes[lv]
            parents = np.unique(tg[:, lv - 1][tg[:, lv - 1] >= 0])
            sib = [order[starts[p]:starts[p + 1]] for p in parents]
            fixed = np.unique(np.concatenate([tg[:, lv][tg[:, lv] >= 0], *sib]))
            draw = torch.randperm(n, generator=gen)[:self.max_negatives].numpy()
            draw = draw[~np.isin(draw, fixed)]
            rest = n - len(fixed)
            rows = np.concatenate([fixed, draw])
            log_w = np.zeros(len(rows), dtype=np.float32)
            if len(draw):
                log_w[len(fixed):] = np.log(rest / len(draw))
            where = np.full(n, -1, dtype=np.int64)
            where[rows] = np.arange(len(rows))
            local = np.where(tg[:, lv] >= 0, where[np.maximum(tg[:, lv], 0)], -1)
            out.append((torch.from_numpy(rows), torch.from_numpy(log_w), torch.from_numpy(local)))
        return out


class TrainStep(nn.Module):
    """One loss evaluation as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: HierLoc, sampler: NegativeSampler | None = None):
        super().__init__()
        self.model = model
        self.sampler = sampler if sampler is not None and sampler.active else None
        self.gen = torch.Generator().manual_seed(model.config.seed)

    def forward(self, feats, targets, latlon):
        if self.sampler is None:
            tangents = self.model.encode_places()
            z = self.model(feats, tangents)
            return self.model.loss(z, self.model.place_points(tangents), targets, latlon)
        if self.model.config.attention:
            raise ValueError("sampled negatives need attention off (attention looks at every place)")
        picks = self.sampler.sample(targets, self.gen)
        dev = feats.device
        tangents, place_latlon, log_w, cols = [], [], [], []
        for lv, pick in enumerate(picks):
            if pick is None:
                tangents.append(self.model.place_tangents(lv))
                place_latlon.append(self.model.place_latlon(lv))
                log_w.append(None)
                cols.append(targets[:, lv])
            else:
                rows, w, local = (t.to(dev) for t in pick)
                tangents.append(self.model.place_tangents(lv, rows))
                place_latlon.append(self.model.place_latlon(lv)[rows])
                log_w.append(w)
                cols.append(local)
        z = self.model(feats)
        return self.model.loss(z, self.model.place_points(tangents), torch.stack(cols, 1), latlon,
                               place_latlon, log_w)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but no CUDA device is available")
    return torch.device("cuda", local_rank)


def quick_validation(model: HierLoc, table: PlaceTable, val) -> dict:
    from hierloc.eval.evaluate import keys_of_paths, predict_features
    from hierloc.eval.metrics import distance_metrics, level_accuracy

    best, _ = predict_features(model, table, val.feats)
    city = table.level_slice("city")
    rows = best[:, 3] + city.start
    acc, _ = level_accuracy(keys_of_paths(table, best), val.keys)
    d = distance_metrics(table.lat_deg[rows], table.lon_deg[rows], val.lat_deg, val.lon_deg)
    model.train()
    return {"val_acc": {k: round(v, 4) for k, v in acc.items()}, "val_median_km": round(d["median_km"], 1)}


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run; returns the final checkpoint folder."""
    from tqdm import tqdm

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    data = prepare_data(cfg)
    model = build_model(cfg, data)
    if cfg.init in ("pca", "pca-origin"):
        model.config.extra["pca_init"] = pca_init(model, data, radial=cfg.init == "pca")  # saved with the model
    step = 0
    state_path, last = out / "trainer_state.pt", out / "last"
    resume = last.exists() and state_path.exists()
    if resume:  # the same data and config give the same place table: load_checkpoint checks it
        loaded, _, _ = load_checkpoint(last, places=data.table)
        with torch.no_grad():
            for p, q in zip(model.parameters(), loaded.parameters()):
                p.copy_(q)
    model.to(device).train()
    opt = HybridOptimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, manifold_lr=cfg.manifold_lr)
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)  # tensors and numbers only
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resumed %s at step %d", out, step)
    saved_step = step
    if rank == 0:
        meta = {**cfg.to_dict(), "git_revision": git_revision(), "places_hash": data.table.content_hash(),
                "world_size": world}
        (out / "config.json").write_text(json.dumps(meta, indent=2))
    stepper: nn.Module = TrainStep(model, NegativeSampler(data.table, cfg.max_negatives))
    if world > 1:
        stepper = nn.parallel.DistributedDataParallel(stepper, device_ids=[local_rank] if device.type == "cuda" else None)

    n = len(data.train) if data.photos is None else GEOCLIP_EPOCH
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.max_steps or int(math.ceil(cfg.epochs * steps_per_epoch))
    per_rank = max(1, cfg.batch_size // world)
    if data.photos is None:
        feats_all = data.train.feats
        latlon_all = torch.as_tensor(np.stack([data.train.lat_deg, data.train.lon_deg], 1), dtype=torch.float32)
    use_amp = cfg.amp and device.type == "cuda"
    log_file = (out / "log.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=rank != 0, dynamic_ncols=True)
    stop_reason = "steps"
    skipped = 0
    clamped = 0
    while step < total:
        if data.photos is not None:  # fresh photos, the same for a given seed, step and rank
            b = data.photos.batch(per_rank, np.random.default_rng([cfg.seed, step, rank]))
            feats, targets, latlon = b.feats.to(device), b.targets.to(device), b.latlon.to(device)
        else:
            epoch, pos = divmod(step, steps_per_epoch)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size][rank::world][:per_rank]
            feats, targets = feats_all[idx].to(device), data.targets[idx].to(device)
            latlon = latlon_all[idx].to(device)
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, per_level = stepper(feats, targets, latlon)
        loss.backward()
        if not torch.isfinite(loss):  # never let one bad batch poison the weights
            skipped += 1
            log.warning("step %d: loss is %s, batch skipped (%d so far)", step, loss.item(), skipped)
            opt.zero_grad()
            grad_norm = float("nan")
        else:
            grad_norm = opt.clip_and_step(cfg.grad_clip)
            if not np.isfinite(grad_norm):
                skipped += 1
            elif cfg.max_anchor_norm:
                clamped += model.clamp_anchors(cfg.max_anchor_norm)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if rank == 0 and (step % cfg.log_every == 0 or step == total):
            crit = model.criterion
            rec = {"step": step, "epoch": round(step / steps_per_epoch, 3), "loss": round(loss.item(), 4),
                   "loss_per_level": {LEVELS[k]: round(float(v), 4) for k, v in per_level.items()},
                   "tau": round(float(crit.tau.detach()), 4), "lambda": round(float(crit.lam.detach()), 4),
                   "sigma_km": round(float(crit.sigma_km.detach()), 1), "grad_norm": round(grad_norm, 3), "skipped_steps": skipped,
                   "clamped_anchors": clamped,
                   "elapsed_s": round(time.time() - t_start, 1)}
            if len(data.val):
                rec.update(quick_validation(model, data.table, data.val))
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            log.info("%s", rec)
        if cfg.minutes and time.time() - t_start > cfg.minutes * 60:
            stop_reason = "time budget"
        if step % cfg.ckpt_every == 0 or step == total or stop_reason != "steps":
            if rank == 0:
                _save(model, data, opt, step, out, cfg, t_start)
            saved_step = step
            if world > 1:
                dist.barrier()
        if stop_reason != "steps":
            log.info("stopping at step %d: %s of %.1f minutes reached", step, stop_reason, cfg.minutes)
            break
    bar.close()
    if rank == 0 and saved_step != step:
        _save(model, data, opt, step, out, cfg, t_start)
    if world > 1:
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "step": step,
                                                           "param_checksum": checksum}))
        dist.barrier()
    if rank == 0 and cfg.push_to_hub:
        _push(last, cfg.push_to_hub)
    if log_file:
        log_file.close()
    return last


def _save(model, data, opt, step, out: Path, cfg: TrainConfig, t_start: float) -> None:
    save_checkpoint(model, data.table, out / "last",
                    extra={"train": {"step": step, "seconds": round(time.time() - t_start, 1),
                                     "config": cfg.to_dict(), "command": cfg.command(),
                                     "git_revision": git_revision()}})
    tmp = out / "trainer_state.pt.tmp"
    torch.save({"optimizer": opt.state_dict(), "step": step}, tmp)
    tmp.replace(out / "trainer_state.pt")


def _push(folder: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi

    from hierloc.hub import hub_reachable

    if not hub_reachable():
        log.error("not pushed to %s: the Hugging Face hub cannot be reached; the checkpoint is in %s", repo_id, folder)
        return
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    log.info("pushed %s to %s", folder, repo_id)
