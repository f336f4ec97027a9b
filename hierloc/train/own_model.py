"""HierLoc on your own photos: memory of the training photos, a prior over places and a
Bayes decision down the tree (`train --images`).

The model is HierLoc's support-attention photo head (model.hierloc) with the training
photos as its support points, each filed under its place and kept with its GPS:

    a_s      = softmax_s( T cos(f, f_s) + b_s )       over every training photo s
    z        = exp_0( sum_l mix_l sum_s a_s t_l(place_l(s)) + MLP(f) )
    score_l  = -d(z, h_place)^2 / tau + log sum_{s in place} a_s

b_s is a learned bias per training photo started at 0, so that before any evidence each
photo is one vote and a place's prior is its share of the training photos (a city with
300 photos starts 100 times as likely as one with 3); the sum of its photos' e^b_s is the
learned prior of a place. The scores make one distribution over the tree
(infer.confidence: a softmax among siblings per level, chained down), and the answer is at
each level the place of largest probability among the children of the one above, so that
a model whose photos carry no signal answers its prior (the most common place) and one
whose photos carry it answers by them. Its GPS is the training photo of largest weight
inside the answered city.

Training minimises, per level, -log p(true place) under that distribution; a photo never
attends to the training photos of its own location cell (leave-one-cell-out), as held-out
photos cannot. The epoch is picked on a validation split of the training photos (whole
cells; the one of least validation loss), the confidence temperatures fitted on it
(infer.confidence.fit_temperatures), then the validation photos join the memory at the
mean learned prior (no second training).

Beside it, on the same features and photos (:func:`baselines`): the nearest training
photos (a vote of k with weights exp(cos / t), k and t picked on the validation split), a
linear classifier per level (logistic regression on the standardised features, its bias the
prior, the weight decay picked on validation) and the most common place.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hierloc import LEVELS

log = logging.getLogger(__name__)

NUM_LEVELS = len(LEVELS)


@dataclass(frozen=True)
class OwnConfig:
    """The recipe's settings (`train --images --set key=value`)."""
    embed_dim: int = 32
    hidden_dim: int = 64
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-2
    weight_decay: float = 1e-4
    support_temperature: float = 10.0
    tau: float = 100.0
    val_share: float = 0.2
    seed: int = 0
    max_support_topk: int = 4096

    @classmethod
    def from_dict(cls, d: dict) -> "OwnConfig":
        from hierloc.model.config import from_known_fields

        return from_known_fields(cls, d, "train --images")


# ---------------------------------------------------------------------------------------
# location cells and folds
# ---------------------------------------------------------------------------------------
def cells(lat, lon, min_cells: int = 5) -> tuple[np.ndarray, float]:
    """Each photo's location cell: the largest size of own_photos.CELL_SIZES_DEG that gives
    at least ``min_cells`` cells -> (cell ids (N,), size in degrees)."""
    from hierloc.data.geoclip_space import cell_of
    from hierloc.train.own_photos import CELL_SIZES_DEG

    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    for size in CELL_SIZES_DEG:
        c = cell_of(lat, lon, size)
        if len(np.unique(c)) >= min_cells:
            break
    return np.asarray(c, dtype=np.int64), size


def cell_folds(lat, lon, k: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """K folds of whole location cells, as even in photos as the cells allow: the cells in
    an order fixed by the seed, the largest first, each to the fold with fewest photos ->
    (fold of each photo (N,), what was done)."""
    c, size = cells(lat, lon, min_cells=2 * k)
    uniq, counts = np.unique(c, return_counts=True)
    if len(uniq) < k:
        raise ValueError(f"the photos fall in {len(uniq)} location cells, fewer than {k} folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    fill = np.zeros(k, dtype=np.int64)
    fold_of_cell = np.zeros(len(uniq), dtype=np.int64)
    for i in order:
        f = int(np.argmin(fill))
        fold_of_cell[i] = f
        fill[f] += counts[i]
    fold = fold_of_cell[np.searchsorted(uniq, c)]
    return fold, {"folds": k, "cell_deg": size, "cells": int(len(uniq)), "seed": seed,
                  "photos_per_fold": fill.tolist()}


def validation_split(lat, lon, seed: int, share: float, cell_deg: float | None = None) -> np.ndarray:
    """Which training photos validate (whole cells, about ``share`` of them; cells of
    ``cell_deg`` degrees, else as own_photos.split_by_cells chooses them)."""
    from hierloc.train.own_photos import split_by_cells

    is_val, _ = split_by_cells(lat, lon, seed=seed, share=share,
                               sizes=(cell_deg,) if cell_deg else None)
    return is_val


# ---------------------------------------------------------------------------------------
# the data of one fit
# ---------------------------------------------------------------------------------------
@dataclass
class Photos:
    """Photos of one side of a split: features (N, F), GPS (N,) x2, true place per level
    as rows of the global offline hierarchy (N, 4), location cell (N,)."""
    feats: torch.Tensor
    lat: np.ndarray
    lon: np.ndarray
    rows: np.ndarray
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.lat)

    def take(self, mask) -> "Photos":
        m = np.asarray(mask)
        return Photos(self.feats[torch.as_tensor(m)], self.lat[m], self.lon[m], self.rows[m], self.cell[m])

    def keys(self, geo) -> dict[str, np.ndarray]:
        return {lv: geo.key[self.rows[:, i]].astype(str) for i, lv in enumerate(LEVELS)}


def photos_of(geo, feats, lat, lon, city_rows, cell=None) -> Photos:
    """Photos from the global hierarchy's city rows of their truth."""
    city_rows = np.asarray(city_rows)
    rows = np.stack([geo.ancestor_at(city_rows, lv) for lv in range(NUM_LEVELS)], 1)
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if cell is None:
        cell, _ = cells(lat, lon)
    return Photos(torch.as_tensor(feats, dtype=torch.float32), lat, lon, rows, np.asarray(cell, dtype=np.int64))


def local_targets(table, geo, photos: Photos) -> torch.Tensor:
    """(N, 4) each photo's place per level as a local index of ``table`` (a subset of geo)."""
    out = np.zeros((len(photos), NUM_LEVELS), dtype=np.int64)
    for lv in range(NUM_LEVELS):
        start = table.level_slice(lv).start
        out[:, lv] = [table.index(k) - start for k in geo.key[photos.rows[:, lv]]]
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
def build(table, geo, support: Photos, cfg: OwnConfig, backbone: str):
    """A HierLoc whose support points are ``support``'s photos (see the module docstring)."""
    from hierloc.model.config import ModelConfig
    from hierloc.model.hierloc import HierLoc, level_latlon
    from hierloc.model.support import support_hash

    tg = local_targets(table, geo, support)
    S = len(support)
    latlon = torch.as_tensor(np.stack([support.lat, support.lon], 1), dtype=torch.float64)
    sup = {"unit": torch.nn.functional.normalize(support.feats.float(), dim=-1),
           "ancestors": [tg[:, lv] for lv in range(NUM_LEVELS)], "latlon": latlon,
           "kind": torch.zeros(S, dtype=torch.long), "group": torch.as_tensor(support.cell),
           "hash": support_hash(latlon.numpy(), tg[:, 3].numpy())}
    mcfg = ModelConfig(
        feat_dim=support.feats.shape[1], num_places=tuple(table.counts().values()), embed_dim=cfg.embed_dim,
        hidden_dim=cfg.hidden_dim, dropout=0.0, attention=False, photo_head="support", support_points=S,
        support_topk=min(S, cfg.max_support_topk), support_temperature=cfg.support_temperature,
        tau_init=cfg.tau, lambda_init=0.0, kernel="none", backbone=backbone, seed=cfg.seed,
        extra={"support_source": "photos", "level_score": "distance+memory", "search_score": "tree",
               "recipe": {"name": "own-photos", **asdict(cfg)}})
    return HierLoc(mcfg, [torch.from_numpy(a) for a in level_latlon(table)], support=sup)


def tree_log_likelihood(model, tree, feats, targets, exclude=None, temperatures=None) -> torch.Tensor:
    """(B, 4) log probability of each photo's true place per level (the tree distribution)."""
    from hierloc.eval.evaluate import level_scores
    from hierloc.infer.confidence import UNCALIBRATED, tree_log_marginals

    z, att = model.located(feats, exclude=exclude)
    points = model.place_points(model.encode_places()) if model.training else model.place_points()
    marg = tree_log_marginals(level_scores(model, z, points, att), tree.parents, temperatures or UNCALIBRATED)
    return torch.stack([marg[lv].gather(1, targets[:, lv:lv + 1]).squeeze(1) for lv in range(NUM_LEVELS)], 1)


@torch.no_grad()
def _remember_all(model, table, geo, train: Photos, kept: np.ndarray, cfg: OwnConfig, backbone: str):
    """The same trained model with every photo of ``train`` as a support point: those it
    was trained with (rows ``kept`` of train) keep their learned prior, the others take the
    mean of those."""
    new = build(table, geo, train, cfg, backbone)
    mine = dict(model.named_parameters())
    for name, p in new.named_parameters():
        if name == "support_bias":
            p.fill_(float(model.support_bias.mean()))
            p[torch.as_tensor(kept)] = model.support_bias
        else:
            p.copy_(mine[name])
    new.config.extra.update({k: v for k, v in model.config.extra.items() if k not in new.config.extra})
    return new


def _epochs(model, tree, train: Photos, targets, cfg: OwnConfig, epochs: int, on_epoch=None):
    from hierloc.train.optim import HybridOptimizer

    opt = HybridOptimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, manifold_lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    cell = torch.as_tensor(train.cell)
    n = len(train)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            ll = tree_log_likelihood(model, tree, train.feats[idx], targets[idx], exclude=cell[idx])
            loss = -ll.sum(1).mean()
            if not torch.isfinite(loss):
                continue
            loss.backward()
            opt.clip_and_step(5.0)
            model.clamp_anchors(6.0)
        if on_epoch is not None:
            on_epoch(epoch + 1)


class one_thread:
    """Torch on one CPU thread inside the block: the recipe's many small operations run
    faster so than with OpenMP's threads waking (the CLI makes them wait passively)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def fit(table, geo, train: Photos, cfg: OwnConfig, backbone: str, refit: bool = True):
    """Train on ``train`` (see the module docstring) -> (model in eval mode, report)."""
    with one_thread():
        return _fit(table, geo, train, cfg, backbone, refit)


def _fit(table, geo, train: Photos, cfg: OwnConfig, backbone: str, refit: bool = True):
    from hierloc.infer.beam import Hierarchy

    torch.manual_seed(cfg.seed)
    tree = Hierarchy.from_table(table)
    is_val = validation_split(train.lat, train.lon, cfg.seed, cfg.val_share)
    fit_part, val = train.take(~is_val), train.take(is_val)
    report = {"photos": {"fit": len(fit_part), "validation": len(val)}}
    # 1. the epoch, on the validation photos (not among the support points here)
    model = build(table, geo, fit_part, cfg, backbone)
    t_fit, t_val = local_targets(table, geo, fit_part), local_targets(table, geo, val)
    curve, best = [], {"epoch": 0, "loss": math.inf, "state": copy.deepcopy(model.state_dict())}

    def check(epoch):
        model.eval()
        with torch.no_grad():
            loss = float(-tree_log_likelihood(model, tree, val.feats, t_val).sum(1).mean())
        curve.append(round(loss, 4))
        if loss < best["loss"]:
            best.update(epoch=epoch, loss=loss, state=copy.deepcopy(model.state_dict()))

    check(0)
    _epochs(model, tree, fit_part, t_fit, cfg, cfg.epochs, check)
    model.load_state_dict(best["state"])
    model.eval()
    temps = fit_calibration(model, table, geo, tree, val)
    report.update(epoch=best["epoch"], validation_loss=round(best["loss"], 4), validation_curve=curve,
                  calibration=temps)
    # 2. the validation photos join the memory, at the mean of the learned priors
    if refit:
        model = _remember_all(model, table, geo, train, np.flatnonzero(~is_val), cfg, backbone)
    model.config.extra["calibration"] = temps
    model.config.extra["recipe"]["chosen_epoch"] = best["epoch"]
    model._cache = None
    return model.eval(), report


@torch.no_grad()
def fit_calibration(model, table, geo, tree, val: Photos) -> dict:
    """The confidence temperatures fitted on the validation photos, and their check there."""
    from hierloc.eval.evaluate import level_scores, search_features
    from hierloc.infer.confidence import answer_confidence, answer_siblings, fit_temperatures, summary

    model.eval()
    points = model.place_points()
    res = search_features(model, val.feats, tree, beam=1, points=points)
    z, att = model.located(val.feats)
    chunks = [answer_siblings(level_scores(model, z, points, att, val.feats), tree, res.best)]
    truth = val.keys(geo)
    pred = _keys(table, res.best.numpy())
    hits = np.stack([pred[lv] == truth[lv] for lv in LEVELS], 1)
    temps = fit_temperatures(chunks, hits)
    return {"temperatures": list(temps), "fitted_on": f"{len(val)} validation photos of the training photos",
            "validation": summary(answer_confidence(chunks, temps), hits)}


def _keys(table, best: np.ndarray) -> dict[str, np.ndarray]:
    from hierloc.eval.evaluate import keys_of_paths

    return keys_of_paths(table, best)


@torch.no_grad()
def predict(model, table, photos: Photos) -> dict:
    """{"keys": {level: (N,)}, "lat", "lon"} of the model's answers."""
    from hierloc.eval.evaluate import answer_gps, predict_features

    best, results = predict_features(model, table, photos.feats)
    lat, lon = answer_gps(table, best, results)
    return {"keys": _keys(table, best), "lat": np.asarray(lat, dtype=float), "lon": np.asarray(lon, dtype=float)}


# ---------------------------------------------------------------------------------------
# baselines on the same features
# ---------------------------------------------------------------------------------------
KNN_K = (1, 3, 5, 10, 20, 50, 100)
KNN_T = (0.01, 0.03, 0.1, 1.0)
LINEAR_DECAY = (1e-4, 1e-3, 1e-2, 1e-1)


def selection_score(pred: dict, photos: Photos, geo) -> float:
    """What a baseline's setting is picked by on validation photos: country and region
    accuracy plus GeoScore / 5000."""
    from hierloc.eval.metrics import geoscore
    from hierloc.geo.distance import haversine_km

    truth = photos.keys(geo)
    acc = sum(float(np.mean(pred["keys"][lv] == truth[lv])) for lv in LEVELS[:2])
    return acc + float(np.mean(geoscore(haversine_km(pred["lat"], pred["lon"], photos.lat, photos.lon)))) / 5000


def knn_predict(geo, train: Photos, test: Photos, k: int, t: float) -> dict:
    """A vote of the k nearest training photos (cosine), each weighing exp(cos / t): the
    place of most weight at each level among the neighbours inside the place chosen above;
    GPS: the heaviest neighbour inside the chosen city."""
    a = torch.nn.functional.normalize(test.feats.float(), dim=-1)
    b = torch.nn.functional.normalize(train.feats.float(), dim=-1)
    cos, idx = (a @ b.T).topk(min(k, len(train)), dim=1)
    w = torch.exp((cos - cos[:, :1]) / t).numpy()
    idx = idx.numpy()
    keys = {lv: np.empty(len(test), dtype=object) for lv in LEVELS}
    lat, lon = np.zeros(len(test)), np.zeros(len(test))
    for i in range(len(test)):
        inside = np.ones(idx.shape[1], dtype=bool)
        for lv in range(NUM_LEVELS):
            r = train.rows[idx[i], lv]
            votes: dict = {}
            for rr, ww in zip(r[inside], w[i][inside]):
                votes[rr] = votes.get(rr, 0.0) + ww
            top = max(votes, key=votes.get)
            keys[LEVELS[lv]][i] = geo.key[top]
            inside &= r == top
        j = idx[i][inside][np.argmax(w[i][inside])]
        lat[i], lon[i] = train.lat[j], train.lon[j]
    return {"keys": {lv: v.astype(str) for lv, v in keys.items()}, "lat": lat, "lon": lon}


def _standardise(train_feats: torch.Tensor):
    mu = train_feats.mean(0)
    sd = train_feats.std(0).clamp_min(1e-6)
    return lambda f: (f.float() - mu) / sd


def linear_fit(train: Photos, decay: float, iters: int = 60):
    """Per level, multinomial logistic regression over the level's training places (L-BFGS,
    L2 weight decay on the weights, not the bias: the bias is the prior)."""
    norm = _standardise(train.feats)
    x = norm(train.feats)
    models = []
    for lv in range(NUM_LEVELS):
        classes, y = np.unique(train.rows[:, lv], return_inverse=True)
        y = torch.as_tensor(y)
        W = torch.zeros(x.shape[1], len(classes), requires_grad=True)
        counts = torch.bincount(y, minlength=len(classes)).float()
        bias = torch.log(counts / counts.sum()).clone().requires_grad_(True)
        opt = torch.optim.LBFGS([W, bias], max_iter=iters, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ W + bias, y) + decay * (W * W).sum()
            loss.backward()
            return loss

        if len(classes) > 1:
            opt.step(closure)
        models.append((classes, W.detach(), bias.detach()))
    return norm, models


def linear_predict(geo, fitted, test: Photos) -> dict:
    """Each level's most probable place (levels independent); GPS: its city's point."""
    norm, models = fitted
    x = norm(test.feats)
    keys, city_rows = {}, None
    for lv, (classes, W, b) in enumerate(models):
        rows = classes[(x @ W + b).argmax(1).numpy()]
        keys[LEVELS[lv]] = geo.key[rows].astype(str)
        city_rows = rows
    return {"keys": keys, "lat": geo.lat_deg[city_rows].astype(float), "lon": geo.lon_deg[city_rows].astype(float)}


def most_common_predict(geo, train: Photos, n: int) -> dict:
    """The most common training place of each level; GPS: the city reached by going down
    the most common places (so that the GPS lies in the place it names)."""
    keys = {}
    for lv in range(NUM_LEVELS):
        vals, counts = np.unique(train.rows[:, lv], return_counts=True)
        keys[LEVELS[lv]] = np.full(n, geo.key[vals[np.argmax(counts)]], dtype=object).astype(str)
    inside = np.ones(len(train), dtype=bool)
    for lv in range(NUM_LEVELS):
        vals, counts = np.unique(train.rows[inside, lv], return_counts=True)
        top = vals[np.argmax(counts)]
        inside &= train.rows[:, lv] == top
    return {"keys": keys, "lat": np.full(n, geo.lat_deg[top], dtype=float),
            "lon": np.full(n, geo.lon_deg[top], dtype=float)}


def baselines(geo, train: Photos, test: Photos, seed: int = 0, val_share: float = 0.2) -> tuple[dict, dict]:
    """The simple methods on ``test``, their settings picked on a validation split of
    ``train`` (the same split HierLoc picks its epoch on) -> (predictions, settings)."""
    with one_thread():
        return _baselines(geo, train, test, seed, val_share)


def _baselines(geo, train: Photos, test: Photos, seed: int, val_share: float) -> tuple[dict, dict]:
    is_val = validation_split(train.lat, train.lon, seed, val_share)
    fit_part, val = train.take(~is_val), train.take(is_val)
    k, t = max(((k, t) for k in KNN_K for t in KNN_T),
               key=lambda kt: selection_score(knn_predict(geo, fit_part, val, *kt), val, geo))
    decay = max(LINEAR_DECAY, key=lambda d: selection_score(linear_predict(geo, linear_fit(fit_part, d), val),
                                                            val, geo))
    preds = {"knn": knn_predict(geo, train, test, k, t),
             "linear": linear_predict(geo, linear_fit(train, decay), test),
             "most_common": most_common_predict(geo, train, len(test))}
    return preds, {"knn": {"k": k, "t": t}, "linear": {"weight_decay": decay}}


# ---------------------------------------------------------------------------------------
# the shipped GeoCLIP-space model, sharpened on your region
# ---------------------------------------------------------------------------------------
YOUR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Weights tried, level by level, for the memory of your photos beside the model's scores."""
YOUR_FLOOR = 1e-4
"""The memory's mass floor: a place with none of your photos is not ruled out, only less likely."""
SHARPEN_CELL_DEG = 0.25
"""Cells (about 25 km) of the validation split that picks the weights: new photos of a region
you photographed fall near, not on, the ones you trained with."""


def your_memory(table, lat, lon) -> dict:
    """Your photos as a memory: their GPS's GeoCLIP location features (unit, as zero-shot's
    gallery points) and the places they are filed under (the benchmark's reverse geocoding)."""
    from hierloc.infer.zeroshot import _file_under_cities, location_unit_cached

    latlon = np.stack([np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)], 1)
    city = torch.as_tensor(_file_under_cities(table, latlon))
    anc = [torch.as_tensor(table.ancestor_at(city.numpy(), lv) - table.level_slice(lv).start) for lv in range(4)]
    return {"unit": location_unit_cached(latlon), "ancestors": anc, "latlon": torch.as_tensor(latlon)}


def with_your_photos(base, table, memory: dict, weights, floor: float = YOUR_FLOOR):
    """A copy of the shipped GeoCLIP-space model that also remembers your photos: each level's
    score of a place gains weights[l] times the log of your photos' mass on it (a softmax
    over them of zero-shot's T cos, plus ``floor``), and the answer is read from the tree
    distribution (HierLoc.attach_your_photos). weights (0, 0, 0, 0) leave the scores as
    they were."""
    from hierloc.infer.zeroshot import POSTERIOR_TEMPERATURE

    c = base.config
    if c.photo_head != "support" or c.feat_dim != 512:
        raise ValueError("only a GeoCLIP-space support-head checkpoint (checkpoints/hierloc-geoclip) can take "
                         "your photos")
    model = copy.copy(base)  # shares the base's tensors: the memory and config are the copy's own
    model.attach_your_photos(memory, {"count": int(len(memory["unit"])), "temperature": POSTERIOR_TEMPERATURE,
                                      "weights": [float(w) for w in weights], "floor": float(floor)})
    return model.eval()


WORLD_GUARD_PHOTOS = 250
"""GeoCLIP-space pseudo-photos of each kind (cities, gallery; the recipe's validation seeds,
never the benchmark's) on which a sharpened model must not lose the world."""
WORLD_TOLERANCE = 0.005
"""How far (as a share) a sharpened model's world accuracy may fall at any level."""
YOUR_FLOORS = (1e-3, 1e-2, 3e-2, 0.1, 0.3)


class _Parts:
    """What the weights' search reads, computed once for a set of photos: the base model's
    level scores and your photos' (unfloored) mass per level."""

    def __init__(self, base, table, memory, feats, truth):
        from hierloc.eval.evaluate import level_scores
        from hierloc.infer.zeroshot import POSTERIOR_TEMPERATURE

        with torch.no_grad():
            z, att = base.located(feats)
            self.scores = [s.float() for s in level_scores(base, z, base.place_points(), att, feats)]
            probe = copy.copy(base)
            probe.attach_your_photos(memory, {"count": len(memory["unit"]), "temperature": POSTERIOR_TEMPERATURE,
                                              "weights": [1.0] * NUM_LEVELS, "floor": 0.0})
            self.mass = [m.exp().float() for m in probe.your_log_mass(feats)]
        self.truth = truth

    def right(self, tree, table, weights, floor) -> np.ndarray:
        """(4,) share right per level with these weights and floor. The answer down the
        tree (eval.evaluate.tree_answer) is, at each level, the child of the place above
        with the largest score: temperatures and normalisers do not move it, so only the
        children's scores are read."""
        from hierloc.infer.beam import _children_of_kept

        B = self.scores[0].shape[0]
        rows = torch.arange(B)
        s0 = self.scores[0] + (weights[0] * (self.mass[0] + floor).log() if weights[0] else 0.0)
        ans = [s0.argmax(1)]
        for lv in range(1, NUM_LEVELS):
            kids, _ = _children_of_kept(tree, lv, ans[-1][:, None])  # (B, W)
            safe = kids.clamp_min(0)
            x = self.scores[lv].gather(1, safe)
            if weights[lv]:
                x = x + weights[lv] * (self.mass[lv].gather(1, safe) + floor).log()
            x = x.masked_fill(kids < 0, -torch.inf)
            ans.append(kids[rows, x.argmax(1)])
        got = _keys(table, torch.stack(ans, 1).numpy())
        return np.array([float(np.mean(got[lv] == self.truth[lv])) for lv in LEVELS])


def world_guard(table, n: int = WORLD_GUARD_PHOTOS):
    """GeoCLIP-space pseudo-photos over the whole world (features, true keys)."""
    from hierloc.eval.calibration import photo_sets, validation_seeds

    sets = photo_sets(table, n, validation_seeds())
    feats = torch.cat([u for u, _ in sets.values()])
    keys = {lv: np.concatenate([k[lv] for _, k in sets.values()]) for lv in LEVELS}
    return feats, keys


def sharpen(base, table, geo, train: Photos, seed: int = 0, val_share: float = 0.2, world=None):
    """The shipped model sharpened on ``train``'s photos (with_your_photos). The floor and
    the weights are picked on a validation split of your photos (whole cells of
    SHARPEN_CELL_DEG): per floor, level by level from the country down, the weight whose
    answers there are most often right with the levels above fixed, among those that keep
    every level's accuracy on world pseudo-photos (world_guard) within WORLD_TOLERANCE of
    the unchanged model's; then the floor whose choice is right most often over the levels.
    Confidences refitted on the validation photos; then the memory holds every photo
    -> (model, report)."""
    from hierloc.infer.beam import Hierarchy

    is_val = validation_split(train.lat, train.lon, seed, val_share, SHARPEN_CELL_DEG)
    fit_part, val = train.take(~is_val), train.take(is_val)
    tree = Hierarchy.from_table(table)
    memory = your_memory(table, fit_part.lat, fit_part.lon)
    w_feats, w_truth = world if world is not None else world_guard(table)
    yours, globe = _Parts(base, table, memory, val.feats, val.keys(geo)), _Parts(base, table, memory, w_feats, w_truth)
    zero = [0.0] * NUM_LEVELS
    world0 = globe.right(tree, table, zero, 1.0)
    best = {"floor": None, "weights": zero, "right": yours.right(tree, table, zero, 1.0)}
    tried = {}
    for floor in YOUR_FLOORS:
        weights = list(zero)
        for lv in range(NUM_LEVELS):
            options = {}
            for w in YOUR_WEIGHTS:
                trial = weights[:lv] + [w] + zero[lv + 1:]
                if w and np.any(globe.right(tree, table, trial, floor) < world0 - WORLD_TOLERANCE):
                    continue  # it would lose the world
                options[w] = yours.right(tree, table, trial, floor)[lv]
            weights[lv] = max(options, key=options.get)  # ties: the smaller weight
        right = yours.right(tree, table, weights, floor)
        tried[str(floor)] = {"weights": weights, "right": [round(float(x), 4) for x in right],
                             "world_right": [round(float(x), 4) for x in globe.right(tree, table, weights, floor)]}
        if right.sum() > best["right"].sum() + 1e-9:
            best = {"floor": floor, "weights": weights, "right": right}
    floor = best["floor"] if best["floor"] is not None else YOUR_FLOORS[-1]
    model = with_your_photos(base, table, memory, best["weights"], floor)
    temps = fit_calibration(model, table, geo, tree, val)
    model = with_your_photos(base, table, your_memory(table, train.lat, train.lon), best["weights"], floor)
    model.config.extra["calibration"] = temps
    return model, {"weights": best["weights"], "floor": floor, "tried": tried,
                   "world_right_unchanged": [round(float(x), 4) for x in world0], "calibration": temps,
                   "photos": {"fit": len(fit_part), "validation": len(val), "world_guard": int(len(w_feats))}}
