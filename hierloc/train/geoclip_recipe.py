"""The GeoCLIP-space recipe: a HierLoc trained on pseudo-photos so that each level's
softmax is that level's posterior, searched by the path's summed distance.

The photo head (``photo_head="support"``, the default; model.hierloc): the paper's
cross-level attention with the photo as query, keys from the places' location features
(every city at its own coordinates and GeoCLIP's 100k gallery points, each filed under
its city: the support points of infer.zeroshot.TreePosterior) and values the tangents of
each support point's country, region, sub-region and city, mixed by learned weights; the
image MLP is a residual that starts at zero. Its logits T cos + prior_s carry a learned
prior over the support points (a bias per point, one per kind of point, and a weight on
the cities' log population), so training learns where photos are taken. Places start
along their support directions (radius 1 / 2 / 3 / 4 by level), so the first step answers
as the zero-shot decoder does, up to the hyperbolic search; ``nest`` draws each level's
directions toward their parent's (so that a place's nearest place one level up is its
parent: a tree), and the places' small learning rate keeps them so. ``photo_head="mlp"`` keeps
the earlier head (an MLP from the photo feature alone, warm-started below).

What the recipe changes against the first one (train.loop with ``--geoclip``), and why:

- **Every level is a classifier.** GWH-InfoNCE over *all* countries and regions each
  step (246 / 3,789 places), sub-regions and cities over the true place's siblings plus
  a uniform sample (importance-weighted, train.loop.NegativeSampler). Trained on photos drawn as the benchmark draws them, a
  level's softmax(-d^2 / tau) then estimates that level's posterior.
- **The answer is the best path** (infer.beam, ``score="path"``): candidates ranked by
  d_0^2 + ... + d_l^2, which is the sum of the levels' log-probabilities up to per-photo
  constants. The older rule (the kept city nearest to the photo) lets one city's
  distance decide the country.
- **A bank of location features** (both photo sources, training cells only), encoded
  once by GeoCLIP's location encoder and cached, each with one displaced copy; every
  step draws photos from it with fresh noise (level uniform in ``noise``, the
  benchmark's noise model), so a step is the model, not the location encoder.
- **A tree term** (weight ``tree_weight``): each step, a sample of places of every level
  below the countries is classified among all places of the level above by -d^2 (target
  its parent), and pushed at least ``radius_margin`` further from the origin than its
  parent (a hinge). It is what keeps places without a training photo (those of held-out
  cells, only ever negatives) by their parent instead of drifting.
- **A warm start** (the mlp head): the photo head begins as the linear map s P (u - mu) onto the top
  ``embed_dim`` principal directions of the places' support directions (the mean
  GeoCLIP feature below each place, infer.zeroshot.TreePosterior.place_directions), and
  each place along its own projected direction at radius 1 / 2 / 3 / 4 by level.
- **Validation on its own photos** (new locations in training cells, a seed the
  benchmark never uses) every ``eval_every`` steps; the run keeps the best.

Run: ``python -m hierloc train --geoclip-recipe --out runs/recipe`` (see cli).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hierloc import LEVELS

log = logging.getLogger(__name__)

VALIDATION_SEED = 977_001
"""Seed of the validation photos: never the benchmark's (bench geoclip uses 0 and 1)."""


SUPPORT_PRIORS = ("learned", "analytic", "analytic-start")


@dataclass(frozen=True)
class RecipeConfig:
    out: str = "runs/geoclip-recipe"
    minutes: float = 45.0             # time cap (building the banks not counted); the budget when max_steps is 0
    max_steps: int = 150              # steps of the run (the learning rates' cosine runs over them); 0: until the time cap
    seed: int = 0
    bank: int = 50_000                # locations per photo source in the feature bank (more than a run draws)
    gallery_share: float = 0.5        # expected share of a batch's photos at gallery locations (the rest at cities)
    noise: tuple = (0.0, 1.5)         # photos' noise levels, uniform, x calibrated
    photo_head: str = "support"       # support: attention over support points (model.hierloc); mlp: the image MLP alone
    support_topk: int = 256
    nest: tuple = (0.5, 0.3, 0.2)     # support head's warm start: regions, sub-regions, cities drawn toward their parent
    attention_weight: float = 0.0     # support head: the attention's own mass on the photo's places, -log, per level
    image_mlp: bool = False           # support head: train the image MLP's residual (it cost cities: 41% -> 24%)
    population_prior: bool = True     # support head: learn a weight on the cities' log population (else it stays 0)
    support_prior: str = "learned"    # support head: learned (a bias per point and per kind, a weight on log population,
                                      # and the temperature, from zero) | analytic (fixed: the photos' own location
                                      # density, model.support.location_log_prior, and the calibrated noise's
                                      # temperature) | analytic-start (starts there, then learned)
    batch_size: int = 256
    embed_dim: int = 128
    hidden_dim: int = 512
    detectors: bool = True            # hidden units beyond the linear start begin as place detectors
    detector_gain: float = 30.0
    geometry: str = "lorentz"         # lorentz | euclidean (ablation)
    lambda_init: float = 1.0          # geo-weighting; 0 turns it off (ablation)
    tau_init: float = 1.0
    sampled_negatives: int = 2048     # uniform sample per step of sub-regions and cities, besides the siblings
    fine_share: float = 0.25          # share of a batch's photos that also train sub-regions and cities
    level_weights: tuple = (1.0, 1.0, 1.0, 1.0)  # GWH-InfoNCE's weight per level (countries .. cities)
    lr: float = 1e-3
    place_lr: float = 2e-3            # the places' tangent vectors (more moves cities across their parent's neighbours)
    place_lr_scale: tuple = (1.0, 1.0, 1.0, 1.0)  # places' lr per level (countries .. cities), times place_lr;
                                      # 0 leaves a level where the warm start put it (the shipped run: all four;
                                      # its gradients still count in the clipping's norm, as they did there)
    bias_lr: float = 5e-2             # support head: the support points' biases
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    cosine: bool = True               # cosine decay of the learning rates to a tenth over the budget
    ema_decay: float = 0.0            # > 0: validate and save an exponential moving average of the weights
    teacher_photos: int = 0           # photos in the teacher bank (0: no distillation)
    teacher_share: float = 0.5        # share of each batch drawn from the teacher bank
    distill_weight: float = 1.0       # weight of the soft cross-entropy on those photos
    tree_weight: float = 0.2
    tree_sample: int = 256            # places per level in the tree term per step
    radius_margin: float = 0.5
    max_anchor_norm: float = 8.0
    eval_every: int = 25
    val_photos: int = 2000            # per photo source (500 choose the step by noise)
    threads: int = 0                  # torch threads (0: torch's default)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.place_lr_scale) != 4 or min(self.place_lr_scale) < 0:
            raise ValueError("place_lr_scale takes one factor >= 0 per level (countries, regions, sub-regions, cities)")
        if len(self.level_weights) != 4 or min(self.level_weights) < 0:
            raise ValueError("level_weights takes one weight >= 0 per level (countries, regions, sub-regions, cities)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay is between 0 (off) and 1, 1 excluded (got {self.ema_decay})")
        if self.support_prior not in SUPPORT_PRIORS:
            raise ValueError(f"support_prior is one of {SUPPORT_PRIORS} (got {self.support_prior!r})")
        if not 0.0 <= self.gallery_share <= 1.0:
            raise ValueError(f"gallery_share is a share of the batch, between 0 and 1 (got {self.gallery_share})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def command(self) -> str:
        default = RecipeConfig()
        sets = [f"--set {k}={json.dumps(v, separators=(',', ':'))}" for k, v in self.to_dict().items()
                if k not in ("out", "extra") and v != getattr(default, k) and not (isinstance(v, tuple) and list(v) == list(getattr(default, k)))]
        return " ".join(["python -m hierloc train --geoclip-recipe", f"--out {self.out}", *sets])


# ---------------------------------------------------------------------------------------
# the feature bank
# ---------------------------------------------------------------------------------------
class FeatureBank:
    """Training locations of both photo sources with their clean and displaced GeoCLIP
    features (float16) and ground truth; photos drawn with fresh noise per batch."""

    def __init__(self, table, n_per_source: int, seed: int = 0, encoder=None):
        from hierloc.data.pseudo_photos import CALIBRATED

        self.table = table
        self.noise = CALIBRATED
        self.clean, self.moved, self.targets, self.latlon = self._load(n_per_source, seed, encoder)

    def _load(self, n: int, seed: int, encoder):
        from safetensors.torch import load_file, save_file

        from hierloc.paths import cache_dir

        cache = cache_dir() / "geoclip_bank" / f"{self.table.content_hash()[:16]}-{n}-{seed}.safetensors"
        if cache.exists():
            raw = load_file(str(cache))
            return raw["clean"], raw["moved"], raw["targets"], raw["latlon"]
        out = self._build(n, seed, encoder)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file(dict(zip(("clean", "moved", "targets", "latlon"), (t.contiguous() for t in out))), str(tmp))
        tmp.replace(cache)
        return out

    def _build(self, n: int, seed: int, encoder):
        from hierloc.data.place_features import load_geoclip_location_encoder
        from hierloc.data.pseudo_photos import SOURCES, LocationSource, displace, location_unit
        from hierloc.geo.reverse import benchmark_geocoder

        t0 = time.perf_counter()
        encoder = encoder or load_geoclip_location_encoder()
        rng = np.random.default_rng([seed, 31337])
        lat, lon = [], []
        for where in SOURCES:
            a, b = LocationSource(where, "train", self.table).draw(n, rng)
            lat.append(a)
            lon.append(b)
        lat, lon = np.concatenate(lat), np.concatenate(lon)
        nm = self.noise
        dist = np.exp(np.log(nm.displace_median_km) + nm.displace_sigma * rng.standard_normal(len(lat)))
        mlat, mlon = displace(lat, lon, dist, rng.uniform(0, 2 * np.pi, len(lat)))
        clean = location_unit(encoder, lat, lon).half()
        moved = location_unit(encoder, mlat, mlon).half()
        rows = benchmark_geocoder(self.table).lookup(lat, lon)
        starts = [self.table.level_slice(lv).start for lv in range(4)]
        tg = np.stack([self.table.ancestor_at(rows, lv) - starts[lv] for lv in range(4)], 1)
        log.info("feature bank: %d locations encoded in %.0f s", len(lat), time.perf_counter() - t0)
        return clean, moved, torch.from_numpy(tg).long(), torch.as_tensor(np.stack([lat, lon], 1), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, n: int, gen: torch.Generator, noise: tuple = (0.0, 1.5), gallery_share: float = 0.5):
        """n photos: (feats (n, 512), targets (n, 4), latlon (n, 2)). Each photo is at a
        gallery location with probability ``gallery_share`` (the bank holds the two sources
        in equal halves, cities first). At 0.5 the draw stays one uniform index over the
        bank: the very draws the shipped recipe was trained with, so its command reproduces it."""
        from hierloc.data.pseudo_photos import FEATURE_DIM

        if gallery_share == 0.5:
            idx = torch.randint(len(self), (n,), generator=gen)
        else:
            half = len(self) // 2
            gallery = torch.rand(n, generator=gen) < gallery_share
            idx = torch.randint(half, (n,), generator=gen) + half * gallery.long()
        level = torch.empty(n).uniform_(noise[0], noise[1], generator=gen)
        moved = torch.rand(n, generator=gen) < (self.noise.share_displaced * level).clamp(max=1.0)
        w = torch.where(moved[:, None], self.moved[idx], self.clean[idx]).float()
        gauss = torch.randn(w.shape, generator=gen) / FEATURE_DIM ** 0.5
        u = nn.functional.normalize(w + (self.noise.isotropic * level)[:, None] * gauss, dim=-1)
        return u, self.targets[idx], self.latlon[idx]


class TeacherBank:
    """Pseudo-photos drawn once from a FeatureBank with the zero-shot decoder's level
    masses (infer.zeroshot.TreePosterior, the teacher) kept beside them: every country's,
    and the ``top`` regions of largest mass. Cached; building it runs the teacher over
    every photo (9.4 ms a photo on a 2-core AMD EPYC: 563 s for 60,000)."""

    def __init__(self, table, bank: FeatureBank, n: int, seed: int = 0, noise: tuple = (0.0, 1.5), top: int = 64):
        from safetensors.torch import load_file, save_file

        from hierloc.paths import cache_dir

        lo, hi = noise
        cache = cache_dir() / "geoclip_bank" / (f"teacher-{table.content_hash()[:16]}-{len(bank)}-{n}-{seed}-"
                                                f"{lo:g}-{hi:g}-{top}.safetensors")
        names = ("feats", "targets", "latlon", "country_logq", "region_idx", "region_logq")
        if cache.exists():
            raw = load_file(str(cache))
            parts = [raw[k] for k in names]
        else:
            parts = self._build(table, bank, n, seed, noise, top)
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in zip(names, parts)}, str(tmp))
            tmp.replace(cache)
        self.feats, self.targets, self.latlon, self.country_logq, self.region_idx, self.region_logq = parts

    @staticmethod
    @torch.inference_mode()
    def _build(table, bank, n, seed, noise, top):
        from hierloc.data.place_features import location_features
        from hierloc.infer.zeroshot import TreePosterior

        t0 = time.perf_counter()
        post = TreePosterior.for_table(table, location_features(table)[3])
        gen = torch.Generator().manual_seed(seed + 7919)
        out = [[] for _ in range(6)]
        for start in range(0, n, 512):
            u, tg, ll = bank.batch(min(512, n - start), gen, noise)
            mass, _ = post.level_log_mass(u)
            rq, ri = torch.topk(mass[1], top, dim=1)
            for lst, v in zip(out, (u.half(), tg, ll, mass[0].half(), ri.int(), rq.half())):
                lst.append(v)
        log.info("teacher bank: %d photos in %.0f s", n, time.perf_counter() - t0)
        return [torch.cat(v) for v in out]

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, n: int, gen: torch.Generator):
        idx = torch.randint(len(self), (n,), generator=gen)
        return (self.feats[idx].float(), self.targets[idx], self.latlon[idx], self.country_logq[idx].float(),
                self.region_idx[idx].long(), self.region_logq[idx].float())


def distill_loss(model, z: torch.Tensor, country_logq: torch.Tensor, region_idx: torch.Tensor,
                 region_logq: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of the student's country and region softmax(-d^2 / tau) against
    the teacher's masses (regions: its top regions, renormalised)."""
    geom, tau = model.geometry, model.criterion.tau
    total = z.new_zeros(())
    for lv, (q_log, cols) in enumerate(((country_logq, None), (region_logq, region_idx))):
        logp = torch.log_softmax(-geom.sq_dist_matrix(z, geom.to_point(model.place_tangents(lv))) / tau, dim=1)
        if cols is not None:
            logp = logp.gather(1, cols)
        q = torch.softmax(q_log, dim=1)
        total = total - (q * logp).sum(1).mean()
    return total


# ---------------------------------------------------------------------------------------
# model, warm start, tree term
# ---------------------------------------------------------------------------------------
def build_model(cfg: RecipeConfig, table, support: dict | None = None):
    from hierloc.data.pseudo_photos import CALIBRATED, CELL_DEG, HOLDOUT_SHARE
    from hierloc.model.config import ModelConfig
    from hierloc.model.hierloc import HierLoc, level_latlon

    notes = {"geoclip": {"locations": "cities+gallery", "noise": list(cfg.noise),
                         "noise_model": dataclasses.asdict(CALIBRATED),
                         "holdout": {"cell_deg": CELL_DEG, "share": HOLDOUT_SHARE}},
             "search_score": "path", "recipe": "train.geoclip_recipe"}
    head = {}
    if cfg.photo_head == "support":
        if support is None:
            raise ValueError("the support photo head needs the support points (model.support.support_for_table)")
        notes["support_hash"] = support["hash"]
        notes["support"] = "every city at its own coordinates + GeoCLIP's 100k gallery, filed under cities"
        head = {"photo_head": "support", "support_points": len(support["unit"]), "support_topk": cfg.support_topk}
    mcfg = ModelConfig(feat_dim=512, num_places=tuple(table.counts().values()), embed_dim=cfg.embed_dim, **head,
                       hidden_dim=cfg.hidden_dim, dropout=0.0, geometry=cfg.geometry, attention=False,
                       anchor_norms=(1.0, 2.0, 3.0, 4.0), anchor_space="tangent", tau_init=cfg.tau_init, lambda_init=cfg.lambda_init,
                       kernel="laplace" if cfg.lambda_init > 0 else "none", backbone="geoclip",
                       backbone_tag="CLIP ViT-L/14 (OpenAI) + GeoCLIP image head, unit 512-d", seed=cfg.seed,
                       extra=notes)
    return HierLoc(mcfg, [torch.from_numpy(a) for a in level_latlon(table)], support=support)


PHOTO_RADIUS = 3.5


def _city_pca(directions: list[torch.Tensor], dim: int, gen: torch.Generator):
    """Mean and top ``dim`` principal directions of (a sample of) the cities' support directions."""
    city = directions[3].double()
    sample = city[torch.randperm(len(city), generator=gen)[:50_000]]
    mu = sample.mean(0)
    _, _, vh = torch.linalg.svd(sample - mu, full_matrices=False)
    return mu, vh[:dim]


@torch.no_grad()
def _places_along(model, directions: list[torch.Tensor], mu: torch.Tensor, P: torch.Tensor,
                  nest: tuple = (1.0, 1.0, 1.0), parents: list | None = None) -> None:
    """Each place along its own projected support direction, at its level's anchor norm.
    ``nest`` (regions, sub-regions, cities) < 1 draws a level's directions toward their
    parents': the unit offset from the parent's own direction is scaled by it and added to
    the parent's nested direction (a tree: siblings keep their order around their parent,
    nearer to it than to its neighbours)."""
    from hierloc.manifold import lorentz as L

    c = model.config
    units, nested = [], []
    for lv in range(4):
        t = (directions[lv].double() - mu) @ P.T
        u = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        units.append(u)
        if lv and any(g != 1.0 for g in nest):
            par = parents[lv]
            u = nested[lv - 1][par] + nest[lv - 1] * (u - units[lv - 1][par])
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        nested.append(u)
        t = (c.anchor_norms[lv] * u).float()
        a = getattr(model, f"anchor_{lv}")
        a.copy_(L.exp0(t, c.curvature) if model.manifold_anchors else t)


@torch.no_grad()
def warm_start(model, directions: list[torch.Tensor], bank: FeatureBank, seed: int = 0, detectors: bool = True,
               detector_gain: float = 30.0) -> dict:
    """The photo head as s P (u - mu) through the first 2D hidden units (GELU(x) - GELU(-x)
    = x; the other hidden units start small), places along their own projected support
    direction at the level's anchor norm. See the module docstring."""

    c = model.config
    D, H = c.embed_dim, c.hidden_dim
    if H < 2 * D:
        raise ValueError("the warm start needs hidden_dim >= 2 embed_dim")
    gen = torch.Generator().manual_seed(seed)
    mu, P = _city_pca(directions, D, gen)  # (512,), (D, 512)
    photos = bank.clean[torch.randperm(len(bank), generator=gen)[:20_000]].double()
    scale = PHOTO_RADIUS / float(((photos - mu) @ P.T).norm(dim=1).median())
    W = (P * scale).float()
    b = -(W.double() @ mu).float()
    lin1, lin2 = model.photo_mlp[0], model.photo_mlp[-1]
    lin1.weight[:D], lin1.weight[D:2 * D] = W, -W
    lin1.bias[:D], lin1.bias[D:2 * D] = b, -b
    rest = H - 2 * D
    if detectors and rest > 0:
        # the other hidden units start as detectors of places' support directions: unit j
        # fires (GELU) where the photo's cosine to its place's direction exceeds what it is
        # for a typical photo; places drawn over regions and sub-regions, mass-weighted
        pool = torch.cat([directions[1], directions[2]]).double()
        pick = torch.randperm(len(pool), generator=gen)[:rest]
        Wd = pool[pick]
        noisy, _, _ = bank.batch(4096, gen, (1.0, 1.0))  # photos at the calibrated level
        cos = noisy.double() @ Wd.T  # (4096, rest)
        thresh = torch.quantile(cos, 0.9, dim=0)  # fires for about a tenth of them
        lin1.weight[2 * D:] = (detector_gain * Wd).float()
        lin1.bias[2 * D:] = (-detector_gain * thresh).float()
    else:
        lin1.weight[2 * D:] *= 0.1
        lin1.bias[2 * D:] *= 0.1
    lin2.weight.zero_()
    lin2.weight[:, :D] = torch.eye(D)
    lin2.weight[:, D:2 * D] = -torch.eye(D)
    lin2.bias.zero_()
    model.log_alpha_img.zero_()
    _places_along(model, directions, mu, P)
    return {"scale": round(scale, 4), "photo_radius": PHOTO_RADIUS, "anchor_norms": list(c.anchor_norms),
            "detectors": int(rest) if detectors else 0, "detector_gain": detector_gain}


@torch.no_grad()
def warm_start_support(model, directions: list[torch.Tensor], seed: int = 0, nest: tuple = (1.0, 1.0, 1.0),
                       parents: list | None = None) -> dict:
    """Support head: each place along its own support direction projected on the top
    ``embed_dim`` principal directions of the cities', at the level's anchor norm (so the
    attention's mix of place tangents starts as the zero-shot posterior's mix of places);
    the image MLP stays a zero residual. Picks the faster dtype for the top-k search."""

    c = model.config
    gen = torch.Generator().manual_seed(seed)
    mu, P = _city_pca(directions, c.embed_dim, gen)
    _places_along(model, directions, mu, P, nest, parents)
    model.candidate_dtype = _faster_dtype(model.support_unit)
    return {"anchor_norms": list(c.anchor_norms), "places": "support directions, PCA", "nest": list(nest),
            "image_mlp": "zero residual",
            "candidate_dtype": str(model.candidate_dtype).replace("torch.", "")}


def analytic_prior(model, table, gallery_share: float = 0.5) -> str:
    """Support head: the attention's prior set to where the training photos are drawn
    (model.support.location_log_prior: ``gallery_share`` at gallery points, the rest at cities
    by population) and its temperature to the calibrated noise's (config.support_temperature,
    150: the slope of the isotropic noise's log-likelihood in cos, eval.geoclip_bench.
    noise_log_likelihood, near the photos' cosines), neither trained. Learned instead, they
    fit the same prior from a few photos per point (a bias per point moved about 0.34 in
    150 steps, where the photos' density is flat across gallery points)."""
    from hierloc.model.support import location_log_prior

    with torch.no_grad():
        model.support_bias.copy_(location_log_prior(table, model.config.support_points, gallery_share))
        model.support_kind_bias.zero_()
        model.support_population_weight.zero_()
        model.log_support_temperature.fill_(math.log(model.config.support_temperature))
    return f"analytic: {gallery_share:g} at gallery points, the rest at cities by population"


def _faster_dtype(keys: torch.Tensor, rows: int = 256) -> torch.dtype:
    """float32 or bfloat16, whichever multiplies (rows, F) by keys.T faster here."""
    q = torch.randn(rows, keys.shape[1])
    best, best_t = torch.float32, float("inf")
    for dt in (torch.float32, torch.bfloat16):
        k = keys[:65536].to(dt)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            q.to(dt) @ k.T
            ts.append(time.perf_counter() - t0)
        if sorted(ts)[1] < best_t * 0.8:
            best, best_t = dt, sorted(ts)[1]
    return best


def attention_loss(model, att, targets: torch.Tensor) -> torch.Tensor:
    """Support head: -log of the attention's mass on the photo's own place, per level
    (the attention read as a posterior over places), mean over levels and photos."""
    idx, a = att
    total = a.new_zeros(())
    for lv in range(4):
        tgt = targets[:, lv]
        hit = getattr(model, f"support_ancestor_{lv}")[idx] == tgt[:, None]  # (B, k)
        mass = (a * hit).sum(1).clamp_min(1e-4)
        valid = tgt >= 0
        total = total - mass[valid].log().mean() / 4
    return total


def tree_loss(model, parents: list[torch.Tensor], sample: int, margin: float, gen: torch.Generator) -> torch.Tensor:
    """Each sampled place classified among all places one level up by -d^2 (target: its
    parent), plus a hinge keeping it ``margin`` further from the origin than its parent."""
    geom = model.geometry
    total = 0.0
    for lv in range(1, 4):
        n = model.config.num_places[lv]
        rows = torch.randint(n, (min(sample, n),), generator=gen)
        child = geom.to_point(model.place_tangents(lv, rows))
        up = geom.to_point(model.place_tangents(lv - 1))
        par = parents[lv][rows]
        logits = -geom.sq_dist_matrix(child, up)
        total = total + nn.functional.cross_entropy(logits, par)
        total = total + torch.relu(geom.norm_from_origin(up[par]) + margin - geom.norm_from_origin(child)).mean()
    return total / 3.0


def recipe_loss(model, sampler, feats, targets, latlon, fine_share: float, gen: torch.Generator,
                level_weights: tuple = (1.0, 1.0, 1.0, 1.0)):
    """GWH-InfoNCE: every photo against all countries and all regions; the first
    ``fine_share`` of the photos also against sampled sub-regions and cities (their
    siblings + a uniform sample); the levels' means summed with ``level_weights``.
    -> (total, per-level means, photo points, the support head's attention or None)."""
    geom, crit = model.geometry, model.criterion
    att = None
    if model.config.photo_head == "support":
        v, att = model.photo_tangent(feats, return_attention=True)
        z = geom.to_point(v.float())
    else:
        z = model(feats)
    total = z.new_zeros(())
    per_level = {}
    m = max(1, int(round(fine_share * len(feats))))
    picks = sampler.sample(targets[:m], gen)
    for lv in range(4):
        pick = picks[lv] if lv >= 2 else None  # countries and regions: always whole
        n = len(feats) if lv < 2 else m
        if pick is None:
            pts, lat, tgt, lw = geom.to_point(model.place_tangents(lv)), model.place_latlon(lv), targets[:n, lv], None
        else:
            rows, lw, tgt = pick
            pts, lat = geom.to_point(model.place_tangents(lv, rows)), model.place_latlon(lv)[rows]
        valid = tgt >= 0
        loss = crit.level_loss(geom, z[:n][valid], pts, tgt[valid], latlon[:n][valid], lat, lw).mean()
        per_level[lv] = loss.detach()
        total = total + level_weights[lv] * loss
    return total, per_level, z, att


# ---------------------------------------------------------------------------------------
# validation and the loop
# ---------------------------------------------------------------------------------------
class Validation:
    """Fixed validation photos at the calibrated level, both sources, training cells."""

    def __init__(self, table, n: int, encoder=None):
        from hierloc.data.place_features import load_geoclip_location_encoder
        from hierloc.data.pseudo_photos import CALIBRATED, photo_features, sample_locations
        from hierloc.geo.reverse import benchmark_geocoder

        encoder = encoder or load_geoclip_location_encoder()
        self.table = table
        self.sets = {}
        rg = benchmark_geocoder(table)
        for i, where in enumerate(("cities", "gallery")):
            lat, lon = sample_locations(n, where, VALIDATION_SEED + i, table=table, split="train")
            u = photo_features(encoder, lat, lon, CALIBRATED, seed=VALIDATION_SEED + 10 + i)
            rows = rg.lookup(lat, lon)
            keys = {lv: table.key[table.ancestor_at(rows, k)].astype(str) for k, lv in enumerate(LEVELS)}
            self.sets[where] = (u, keys)

    def __call__(self, model, search: str = "beam") -> dict:
        from hierloc.eval.evaluate import keys_of_paths, predict_features

        out = {}
        for where, (u, keys) in self.sets.items():
            best, _ = predict_features(model, self.table, u, search=search)
            pred = keys_of_paths(self.table, best)
            out[where] = {lv: round(100 * float(np.mean(pred[lv] == keys[lv])), 1) for lv in LEVELS}
        model.train()
        return out


def _objective(val: dict) -> float:
    """What 'best' means: mean country + region accuracy over both photo sources."""
    return float(np.mean([v[lv] for v in val.values() for lv in ("country", "region")]))


def _swap(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """Exchange the values of two lists of tensors in place (the live weights and their average)."""
    with torch.no_grad():
        for x, y in zip(a, b):
            t = x.detach().clone()
            x.copy_(y)
            y.copy_(t)


def train_recipe(cfg: RecipeConfig) -> Path:
    """Train; returns the best checkpoint folder (RUN/best; RUN/last is the last step)."""
    from hierloc.data.place_features import load_geoclip_location_encoder, location_features
    from hierloc.geo.places import default_places
    from hierloc.infer.zeroshot import TreePosterior
    from hierloc.model.checkpoint import save_checkpoint
    from hierloc.train.loop import NegativeSampler, git_revision

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    table = default_places()
    encoder = load_geoclip_location_encoder()
    t_prep = time.time()
    bank = FeatureBank(table, cfg.bank, cfg.seed, encoder)
    teacher = TeacherBank(table, bank, cfg.teacher_photos, cfg.seed, cfg.noise) if cfg.teacher_photos else None
    val = Validation(table, cfg.val_photos, encoder)
    post = TreePosterior.for_table(table, location_features(table)[3])
    directions = post.place_directions()
    prep_s = time.time() - t_prep
    parents = [None] + [torch.as_tensor(table.parent_within_level(lv), dtype=torch.long) for lv in range(1, 4)]
    if cfg.photo_head == "support":
        from hierloc.model.support import support_from_posterior

        model = build_model(cfg, table, support_from_posterior(post, table))
        model.config.extra["warm_start"] = warm_start_support(model, directions, cfg.seed, tuple(cfg.nest), parents)
    else:
        model = build_model(cfg, table)
        model.config.extra["warm_start"] = warm_start(model, directions, bank, cfg.seed, cfg.detectors,
                                                      cfg.detector_gain)
    del post
    model.train()
    sampler = NegativeSampler(table, cfg.sampled_negatives)  # sub-regions and cities sampled
    named = dict(model.named_parameters())
    anchors = [getattr(model, f"anchor_{lv}") for lv in range(4)]
    if not cfg.population_prior:
        named.pop("support_population_weight", None)  # stays 0 (saved as such)
    if cfg.support_prior != "learned" and cfg.photo_head == "support":
        model.config.extra["warm_start"]["prior"] = analytic_prior(model, table, cfg.gallery_share)
        if cfg.support_prior == "analytic":
            for n in ("support_bias", "support_kind_bias", "support_population_weight", "log_support_temperature"):
                named.pop(n)  # fixed (saved as such)
    if not cfg.image_mlp and cfg.photo_head == "support":
        for n in [n for n in named if n.startswith("photo_mlp.") or n == "log_alpha_img"]:
            named.pop(n)  # the residual stays zero (saved as such)
    biases = [p for n, p in named.items() if n.startswith("support_") and (n.endswith("bias") or n.endswith("weight"))]
    rest = [p for p in named.values() if not any(p is q for q in anchors + biases)]
    place_lrs = [cfg.place_lr * f for f in cfg.place_lr_scale]  # one group per level
    base_lrs = [cfg.lr, *place_lrs, cfg.bias_lr]  # the groups' order, for the cosine below
    opt = torch.optim.AdamW([{"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                             *({"params": [a], "lr": lr, "weight_decay": 0.0} for a, lr in zip(anchors, place_lrs)),
                             {"params": biases, "lr": cfg.bias_lr, "weight_decay": 0.0}])
    params = rest + anchors + biases
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"recipe": cfg.to_dict(), "command": cfg.command(), "git_revision": git_revision(),
            "places_hash": table.content_hash(), "bank_locations": len(bank), "prepare_s": round(prep_s, 1)}
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    log_file = (out / "log.jsonl").open("w")
    best, history = -1.0, []

    ema = [p.detach().clone() for p in params] if cfg.ema_decay else None

    def evaluate_and_save(step: int, seconds: float, loss: float, parts: dict):
        if ema is not None:  # the average is what is validated and saved
            _swap(params, ema)
        try:
            return _validate_and_save(step, seconds, loss, parts)
        finally:
            if ema is not None:
                _swap(params, ema)

    def _validate_and_save(step: int, seconds: float, loss: float, parts: dict):
        nonlocal best
        v = val(model)
        obj = _objective(v)
        rec = {"step": step, "seconds": round(seconds, 1), "steps_per_s": round(step / max(seconds, 1e-9), 2),
               "loss": round(loss, 4), **parts, "tau": round(float(model.criterion.tau.detach()), 4), "val": v,
               "objective": round(obj, 2)}
        history.append(rec)
        log_file.write(json.dumps(rec) + "\n")
        log_file.flush()
        log.info("%s", rec)
        extra = {"train": {"step": step, "seconds": round(seconds, 1), "prepare_s": round(prep_s, 1),
                           "recipe": cfg.to_dict(),
                           "command": cfg.command(), "git_revision": git_revision(), "validation": v}}
        if obj > best:
            best = obj
            save_checkpoint(model, table, out / "best", extra=extra)
        return extra

    t0 = time.time()
    step, loss_v, parts = 0, float("nan"), {}
    evaluate_and_save(0, 1e-9, loss_v, parts)
    while True:
        n_t = int(round(cfg.teacher_share * cfg.batch_size)) if teacher is not None else 0
        feats, targets, latlon = bank.batch(cfg.batch_size - n_t, gen, cfg.noise, cfg.gallery_share)
        if n_t:
            tf, tt, tl_, cq, ri, rq = teacher.batch(n_t, gen)
            feats, targets, latlon = torch.cat([tf, feats]), torch.cat([tt, targets]), torch.cat([tl_, latlon])
        opt.zero_grad()
        loss, per_level, z, att = recipe_loss(model, sampler, feats, targets, latlon, cfg.fine_share, gen,
                                                cfg.level_weights)
        dl = distill_loss(model, z[:n_t], cq, ri, rq) if n_t else torch.zeros(())
        al = attention_loss(model, att, targets) if att is not None and cfg.attention_weight else torch.zeros(())
        loss = loss + cfg.distill_weight * dl + cfg.attention_weight * al
        tl = tree_loss(model, parents, cfg.tree_sample, cfg.radius_margin, gen) if cfg.tree_weight else torch.zeros(())
        total = loss + cfg.tree_weight * tl
        total.backward()
        if torch.isfinite(total):
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if cfg.cosine:  # lr decays to a tenth along the budget (steps, else minutes)
                done_share = step / cfg.max_steps if cfg.max_steps else (time.time() - t0) / (60 * cfg.minutes)
                f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done_share)))
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * f
            opt.step()
            if cfg.max_anchor_norm:
                model.clamp_anchors(cfg.max_anchor_norm)
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, params):
                        e.lerp_(p.detach(), 1.0 - cfg.ema_decay)
        else:
            opt.zero_grad()
        step += 1
        loss_v = float(loss.detach())
        parts = {"loss_per_level": {LEVELS[k]: round(float(v), 4) for k, v in per_level.items()},
                 "tree": round(float(tl.detach()), 4), "distill": round(float(dl.detach()), 4),
                 "attention": round(float(al.detach()), 4)}
        elapsed = time.time() - t0
        done = (cfg.max_steps and step >= cfg.max_steps) or elapsed > cfg.minutes * 60
        if step % cfg.eval_every == 0 or done:
            extra = evaluate_and_save(step, elapsed, loss_v, parts)
        if done:
            break
    model.eval()
    if ema is not None:
        _swap(params, ema)
    save_checkpoint(model, table, out / "last", extra=extra)
    log_file.close()
    (out / "history.json").write_text(json.dumps(history, indent=2))
    return out / "best"
