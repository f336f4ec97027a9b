"""Predict and score: features -> beam (or flat) search -> benchmark metrics."""

from __future__ import annotations

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.eval.metrics import all_metrics
from hierloc.infer.beam import Hierarchy, beam_search, flat_search
from hierloc.infer.confidence import UNCALIBRATED, check_temperatures, read_marginals, tree_log_marginals


def search_score(model) -> str:
    """How a model's searches rank paths (infer.beam): what it was trained for, saved in
    its config ("path" for train.geoclip_recipe's models), else the older "city"."""
    return model.config.extra.get("search_score", "city")


def confidence_temperatures(model) -> tuple:
    """The temperatures of the confidences a model shows (infer.confidence), as
    `hierloc calibrate` fitted them (config.json: model.extra.calibration), else 1 at every
    level (uncalibrated)."""
    cal = model.config.extra.get("calibration") or {}
    return check_temperatures(cal.get("temperatures", UNCALIBRATED))


def level_scores(model, z: torch.Tensor, points: list[torch.Tensor], attention=None,
                 feats: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every place's score at every level, -d^2 / tau: (B, p) -> per level (B, N_l); for a
    model that scores with its memory (HierLoc.scores_memory), plus the log of the support
    attention's mass on the place (``attention`` from HierLoc.located); for one that
    remembers your photos, plus each level's weight times the log of their mass (``feats``,
    the photos' features)."""
    tau = model.criterion.tau.detach()
    scores = [-model.geometry.sq_dist_matrix(z, p) / tau for p in points]
    if getattr(model, "scores_memory", False):
        if attention is None:
            raise ValueError("this model's scores need the support attention its photos were located with")
        scores = [s + m for s, m in zip(scores, model.support_log_mass(attention))]
    if getattr(model, "remembers_your_photos", False):
        if feats is None:
            raise ValueError("this model's scores need the photos' features (its memory of your photos)")
        weights = model.config.extra["your_photos"]["weights"]
        scores = [s + w * m if w else s for s, w, m in zip(scores, weights, model.your_log_mass(feats))]
    return scores


def tree_answer(marginals: list[torch.Tensor], tree: Hierarchy, k: int) -> torch.Tensor:
    """The paths of one distribution over the tree (infer.confidence): first the answer,
    from the country down the place of largest probability among the children of the
    place above; then the paths of the most probable other cities -> (B, k, 4) local ids
    (-1: none)."""
    from hierloc.infer.beam import _children_of_kept

    B = marginals[0].shape[0]
    ans = [marginals[0].argmax(1)]
    for lv in range(1, len(marginals)):
        kids, _ = _children_of_kept(tree, lv, ans[-1][:, None])  # (B, W)
        x = marginals[lv].gather(1, kids.clamp_min(0)).masked_fill(kids < 0, -torch.inf)
        ans.append(kids.gather(1, x.argmax(1, keepdim=True)).squeeze(1))
    answer = torch.stack(ans, 1)  # (B, 4)
    paths = torch.full((B, k, len(marginals)), -1, dtype=torch.long, device=answer.device)
    paths[:, 0] = answer
    rest = min(k - 1, marginals[-1].shape[1] - 1)
    if rest > 0:  # the other cities in decreasing probability, the answer's left out
        city = marginals[-1].scatter(1, answer[:, 3:4], -torch.inf).topk(rest, dim=1).indices  # (B, rest)
        cols = [city]
        for lv in range(len(marginals) - 1, 0, -1):
            cols.insert(0, tree.parents[lv][cols[0]])
        paths[:, 1:1 + rest] = torch.stack(cols, -1)
    return paths


@torch.inference_mode()
def search_features(model, feats: torch.Tensor, tree: Hierarchy, beam: int = 10, search: str = "beam",
                    points: list[torch.Tensor] | None = None, levels: bool = False):
    """One batch of features (B, F) -> SearchResult: beam (or flat) search over the model's
    places, ranked as it was trained to (search_score); for a support head, each path's
    GPS is where the photo's attention puts it inside that path's city (HierLoc.attended_gps);
    ``levels``: with what the app shows, read off one distribution over the tree with the
    model's confidence temperatures (infer.confidence): the answer's confidence at each
    level, each path's probability, every country's and region's, the most probable cities."""
    points = points if points is not None else model.place_points()
    tau, score = model.criterion.tau.detach(), search_score(model)
    z, attention = model.located(feats)
    if getattr(model, "answers_from_tree", False):
        return _search_tree(model, z, attention, points, tree, beam, feats)
    if search == "beam":
        res = beam_search(model.geometry, z, points, tree, beam=beam, tau=tau, score=score)
    else:
        res = flat_search(model.geometry, z, points, tree, k=beam, tau=tau, score=score)
    if attention is not None:
        res.gps = model.attended_gps(attention, res.paths[:, :, 3])
    if levels:
        marginals = tree_log_marginals(level_scores(model, z, points, attention, feats), tree.parents,
                                       confidence_temperatures(model))
        shown = read_marginals(marginals, res.paths)
        res.confidence, res.probability, res.levels, res.cities = (shown[k] for k in
                                                                   ("confidence", "probability", "levels", "cities"))
        res = candidates_by_probability(res)
    return res


def _search_tree(model, z, attention, points, tree: Hierarchy, k: int, feats=None):
    """A model that scores with its memory answers from its distribution over the tree
    (tree_answer); SearchResult as beam_search gives it, with what the app shows."""
    from hierloc.infer.beam import SearchResult

    marginals = tree_log_marginals(level_scores(model, z, points, attention, feats), tree.parents,
                                   confidence_temperatures(model))
    paths = tree_answer(marginals, tree, k)
    shown = read_marginals(marginals, paths)
    safe = paths.clamp_min(0)
    sq = torch.stack([model.geometry.sq_dist_matrix(z, points[lv]).gather(1, safe[:, :, lv])
                      for lv in range(len(points))], -1).masked_fill(paths < 0, torch.inf)  # (B, k, 4)
    logp = marginals[-1].gather(1, safe[:, :, 3]).masked_fill(paths[:, :, 3] < 0, -torch.inf)
    res = SearchResult(paths=paths, sq_dist=sq, score=logp.float(), confidence=shown["confidence"].float())
    res.probability, res.levels, res.cities = shown["probability"], shown["levels"], shown["cities"]
    res.gps = model.attended_gps(attention, paths[:, :, 3])
    return res


def candidates_by_probability(res):
    """The paths after the answer in decreasing probability (the answer stays first)."""
    rest = torch.argsort(-res.probability[:, 1:], dim=1, stable=True) + 1
    order = torch.cat([torch.zeros_like(rest[:, :1]), rest], 1)  # (B, k)

    def take(t):
        return None if t is None else t.gather(1, order.reshape(*order.shape, *[1] * (t.dim() - 2)).expand_as(t))

    res.paths, res.sq_dist, res.score, res.gps, res.probability = (
        take(t) for t in (res.paths, res.sq_dist, res.score, res.gps, res.probability))
    return res


@torch.inference_mode()
def predict_features(model, table, feats: torch.Tensor, beam: int = 10, search: str = "beam",
                     batch: int = 1024, tree: Hierarchy | None = None):
    """feats (N, F) -> (best paths (N, 4) local indices, SearchResult list per batch)."""
    model.eval()
    device = next(model.parameters()).device
    tree = tree or Hierarchy.from_table(table, device)
    points = model.place_points()
    best, results = [], []
    for i in range(0, len(feats), batch):
        res = search_features(model, feats[i:i + batch].to(device), tree, beam, search, points)
        best.append(res.best.cpu())
        results.append(res)
    return (torch.cat(best).numpy() if best else np.zeros((0, 4), dtype=np.int64)), results


def answer_gps(table, best: np.ndarray, results: list) -> tuple[np.ndarray, np.ndarray]:
    """The GPS of each answer (predict_features' output): the search's own where it gives
    one (a support head's attended point), else the answered city's centroid. -> lat, lon (N,)."""
    if results and all(r.gps is not None for r in results):
        gps = torch.cat([r.gps[:, 0].cpu() for r in results]).double().numpy()
        return gps[:, 0], gps[:, 1]
    rows = best[:, 3] + table.level_slice("city").start
    return table.lat_deg[rows], table.lon_deg[rows]


def keys_of_paths(table, best: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 4) local indices -> {level: (N,) keys}."""
    out = {}
    for lv, level in enumerate(LEVELS):
        sl = table.level_slice(lv)
        out[level] = table.key[sl][best[:, lv]].astype(str)
    return out


def reverse_geocoded_keys(lat_deg, lon_deg) -> dict[str, np.ndarray]:
    """The benchmark's protocol: nearest GeoNames point of each predicted GPS -> keys."""
    from hierloc.geo.reverse import benchmark_geocoder

    rg = benchmark_geocoder()
    geo_table = rg.table
    rows = rg.lookup(lat_deg, lon_deg)
    return {level: geo_table.key[geo_table.ancestor_at(rows, lv)].astype(str) for lv, level in enumerate(LEVELS)}


def evaluate_photos(model, table, photos, beam: int = 10, search: str = "beam") -> dict:
    """Benchmark metrics of a model on a PhotoSet (both protocols)."""
    best, results = predict_features(model, table, photos.feats, beam, search)
    pred_lat, pred_lon = answer_gps(table, best, results)
    return all_metrics(pred_lat, pred_lon, photos.lat_deg, photos.lon_deg,
                       pred_keys=keys_of_paths(table, best), true_keys=photos.keys,
                       rg_keys=reverse_geocoded_keys(pred_lat, pred_lon))


def baseline_metrics(table, train, test, seed: int = 0) -> dict:
    """Chance (a uniformly random city of the hierarchy) and nearest centroid (the city
    whose mean training feature is nearest, cosine) on the test photos."""
    city = table.level_slice("city")
    n_city = city.stop - city.start
    rng = np.random.default_rng(seed)
    out = {}
    chance = rng.integers(0, n_city, len(test)) + city.start
    out["chance"] = _metrics_for_city_rows(table, chance, test)
    index = {k: i for i, k in enumerate(table.key[city])}
    known = np.array([k in index for k in train.keys["city"]], dtype=bool)  # cities of the hierarchy
    local = torch.as_tensor([index[k] for k in train.keys["city"][known]], dtype=torch.long)
    f = torch.nn.functional.normalize(train.feats[torch.as_tensor(known)].float(), dim=-1)
    sums = torch.zeros(n_city, f.shape[1]).index_add_(0, local, f)
    cent = torch.nn.functional.normalize(sums, dim=-1)
    q = torch.nn.functional.normalize(test.feats.float(), dim=-1)
    nearest = torch.cat([(q[i:i + 2048] @ cent.T).argmax(1) for i in range(0, len(q), 2048)]).numpy()
    out["nearest_centroid"] = _metrics_for_city_rows(table, nearest + city.start, test)
    return out


def _metrics_for_city_rows(table, rows, photos) -> dict:
    best = np.stack([table.ancestor_at(rows, lv) - table.level_slice(lv).start for lv in range(4)], 1)
    lat, lon = table.lat_deg[rows], table.lon_deg[rows]
    return all_metrics(lat, lon, photos.lat_deg, photos.lon_deg, pred_keys=keys_of_paths(table, best),
                       true_keys=photos.keys, rg_keys=reverse_geocoded_keys(lat, lon))
