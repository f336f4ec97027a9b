"""The GeoCLIP-space benchmark: decoders compared on photo features made by GeoCLIP's
real pretrained location encoder. A proxy, not accuracy on real photos.

GeoCLIP trains its image head so that a photo's feature points the way of its location
encoder's output for the photo's GPS; loc(true GPS) is therefore the best feature any
image encoder in this space can give, and a real photo's feature is that, blurred.
Here a photo's feature is

    u = normalise( loc(GPS') / |loc(GPS')| + s * n ),   n ~ N(0, I / 512)

with two kinds of blur (:class:`NoiseModel`):
- isotropic, ``s``: the encoder's general uncertainty;
- structured: a share ``q`` of the photos is encoded at GPS' = the true GPS moved a
  log-normal distance (median ``displace_median_km``) in a random direction, the rest at
  GPS' = GPS. Real confusions are between places that look alike, and places that look
  alike are mostly near one another (same climate, vegetation, architecture, road
  furniture); with isotropic noise alone the errors are either tiny or global, and the
  accuracy curve over 25..2500 km comes out flatter than any published one.

Calibration (``CALIBRATED``, in hierloc.data.pseudo_photos with the rest of the noise model
and the location pools, shared with GeoCLIP-space training): s, q and the displacement were set so that GeoCLIP's own
decoder (arg-max cosine over the 100k GPS gallery in the geoclip wheel) reproduces
GeoCLIP's published Im2GPS3k accuracy within a few points at 25/200/750/2500 km; the
numbers are in the README. Noise levels are multiples of the calibrated one (s and q
scaled together): 0 gives loc(true GPS) itself.

Photo locations: population-weighted cities with a few km of jitter (as GeoSynth),
the GeoCLIP gallery's points with the same jitter, or a CSV of latitude/longitude.
Ground truth: the benchmark's protocol (nearest GeoNames point).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hierloc import LEVELS
from hierloc.data.pseudo_photos import (  # noqa: F401 (the benchmark's names, shared with training)
    CALIBRATED, FEATURE_DIM, NoiseModel, displace, displace_some, location_unit, photo_features, read_locations,
    sample_locations)
from hierloc.eval.evaluate import keys_of_paths
from hierloc.eval.metrics import PUBLISHED_IM2GPS3K, THRESHOLDS_KM, all_metrics, level_hits, paired_difference

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.0, 0.5, 1.0, 1.5)


# ---------------------------------------------------------------------------------------
# photo locations and features
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# decoders: (N, 512) unit features -> predicted keys per level, lat, lon
# ---------------------------------------------------------------------------------------
@dataclass
class Decoded:
    keys: dict          # level -> (N,) keys (None: read off the GPS by reverse geocoding)
    lat_deg: np.ndarray
    lon_deg: np.ndarray


class Space:
    """Everything the decoders share: place table, GeoCLIP features, reverse geocoder."""

    def __init__(self, table=None):
        from hierloc.data.place_features import load_geoclip_location_encoder, location_features
        from hierloc.geo.places import default_places
        from hierloc.geo.reverse import ReverseGeocoder
        from hierloc.infer.zeroshot import gallery_features, gallery_latlon

        self.table = table or default_places()
        self.encoder = load_geoclip_location_encoder()
        self.loc = location_features(self.table)  # per level (N_l, 512) at centroids
        self.gallery_latlon = gallery_latlon()
        self.gallery = gallery_features()
        self.rg = ReverseGeocoder(self.table, "benchmark")
        self._posterior = None

    def keys_of_city_rows(self, rows) -> dict:
        return {lv: self.table.key[self.table.ancestor_at(rows, i)].astype(str) for i, lv in enumerate(LEVELS)}

    def truth(self, lat_deg, lon_deg) -> dict:
        return self.keys_of_city_rows(self.rg.lookup(lat_deg, lon_deg))

    @property
    def posterior(self):
        if self._posterior is None:
            from hierloc.infer.zeroshot import TreePosterior

            self._posterior = TreePosterior.for_table(self.table, self.loc[3])
        return self._posterior


def region_locations(table, region_key: str, n: int, seed: int, jitter_km: float = 3.0):
    """n locations inside one region (a region key of ``table``): its cities drawn by
    population (unknown or under 1,000 counts as 1,000), moved ``jitter_km`` -> lat, lon (n,)."""
    from hierloc.data.synthetic import jitter

    row = table.index(region_key)
    city = table.level_slice("city")
    rows = np.arange(city.start, city.stop)
    inside = rows[table.ancestor_at(rows, 1) == row]
    pop = np.nan_to_num(table.population[inside], nan=1000.0).clip(min=1000.0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(inside, size=n, p=pop / pop.sum())
    return jitter(table.lat_deg[pick], table.lon_deg[pick], jitter_km, rng)


def _argmax_cos(u: torch.Tensor, keys: torch.Tensor, chunk: int = 512) -> np.ndarray:
    keys = torch.nn.functional.normalize(keys.float(), dim=-1)
    return torch.cat([(u[i:i + chunk] @ keys.T).argmax(1) for i in range(0, len(u), chunk)]).numpy()


def decode_gallery(space: Space, u: torch.Tensor) -> Decoded:
    """GeoCLIP's own decoder: the gallery point of largest cosine; places by reverse geocoding."""
    i = _argmax_cos(u, space.gallery)
    lat, lon = space.gallery_latlon[i, 0], space.gallery_latlon[i, 1]
    return Decoded(space.keys_of_city_rows(space.rg.lookup(lat, lon)), lat, lon)


def decode_flat_city(space: Space, u: torch.Tensor) -> Decoded:
    """The city of largest cosine (its centroid's feature); the path read off its parents."""
    city = space.table.level_slice("city")
    rows = _argmax_cos(u, space.loc[3]) + city.start
    return Decoded(space.keys_of_city_rows(rows), space.table.lat_deg[rows], space.table.lon_deg[rows])


def decode_centroid_beam(space: Space, u: torch.Tensor, beam: int = 10) -> Decoded:
    """The zero-shot profile before the tree posterior: beam search over places put along
    their centroid's location feature (fixed radii)."""
    from hierloc.infer import zeroshot as zs
    from hierloc.infer.beam import Hierarchy, beam_search
    from hierloc.model.geometry import Geometry

    tree = Hierarchy.from_table(space.table)
    points = zs.place_points(space.loc)
    best = []
    with torch.inference_mode():
        for i in range(0, len(u), 1024):
            best.append(beam_search(Geometry("lorentz", 1.0), zs.photo_points(u[i:i + 1024]), points, tree,
                                    beam=beam).best)
    paths = torch.cat(best).numpy()
    rows = paths[:, 3] + space.table.level_slice("city").start
    return Decoded(keys_of_paths(space.table, paths), space.table.lat_deg[rows], space.table.lon_deg[rows])


def gallery_decoder(latlon: np.ndarray):
    """Zero-shot's tree posterior with your own locations added to its support points
    (infer.zeroshot.custom_gallery)."""
    from hierloc.infer.zeroshot import TreePosterior

    cache: dict = {}

    def decode(space: Space, u: torch.Tensor) -> Decoded:
        if "post" not in cache:
            cache["post"] = TreePosterior.for_table(space.table, space.loc[3], extra_latlon=latlon)
        res = cache["post"].search(u, k=1)
        gps = res.gps[:, 0].numpy()
        return Decoded(keys_of_paths(space.table, res.best.numpy()), gps[:, 0], gps[:, 1])

    return decode


def decode_tree_posterior(space: Space, u: torch.Tensor) -> Decoded:
    """The zero-shot profile as shipped: infer.zeroshot.TreePosterior."""
    res = space.posterior.search(u, k=1)
    gps = res.gps[:, 0].numpy()
    return Decoded(keys_of_paths(space.table, res.best.numpy()), gps[:, 0], gps[:, 1])


def checkpoint_decoder(source: str, beam: int = 10, search: str = "beam"):
    """A HierLoc checkpoint whose photo head takes 512-d GeoCLIP features."""
    from hierloc.model.checkpoint import load_checkpoint

    model, table, _ = load_checkpoint(source)
    return model_decoder(model, table, beam, search, name=source)


def model_decoder(model, table, beam: int = 10, search: str = "beam", name: str = "the model"):
    """A loaded HierLoc model's search (checkpoint_decoder, once it is loaded)."""
    from hierloc.eval.evaluate import answer_gps, predict_features

    if model.config.feat_dim != FEATURE_DIM:
        raise ValueError(f"checkpoint {name} takes {model.config.feat_dim}-d features, not GeoCLIP's "
                         f"{FEATURE_DIM}-d: it was not trained in GeoCLIP's space")

    def decode(space: Space, u: torch.Tensor) -> Decoded:
        best, results = predict_features(model, table, u, beam=beam, search=search)
        return Decoded(keys_of_paths(table, best), *answer_gps(table, best, results))

    return decode


def attention_posterior_decoder(model, table, gallery_only: bool = False):
    """A support-head checkpoint's attention read as a posterior (benchmarks/bench_ceiling.py):
    per level, the place of largest summed attention weight over the photo's top-k support
    points (HierLoc.support_attention; levels chosen independently); GPS: that city's.
    ``gallery_only`` attends over GeoCLIP's gallery points alone (an oracle on gallery
    locations)."""
    prior = None
    if gallery_only:
        prior = model.support_prior().detach().masked_fill(model.support_kind != 1, float("-inf"))

    @torch.inference_mode()
    def decode(space, u: torch.Tensor) -> Decoded:
        best = []
        for part in u.split(256):
            idx, a = model.support_attention(part, prior)
            path = []
            for lv, n in enumerate(model.config.num_places):
                anc = getattr(model, f"support_ancestor_{lv}")[idx]
                path.append(torch.zeros(len(part), n).scatter_add_(1, anc, a).argmax(1))
            best.append(torch.stack(path, 1))
        paths = torch.cat(best).numpy()
        rows = paths[:, 3] + table.level_slice("city").start
        return Decoded(keys_of_paths(table, paths), table.lat_deg[rows], table.lon_deg[rows])

    return decode


def noise_log_likelihood(cos: torch.Tensor, noise: NoiseModel, dim: int = FEATURE_DIM) -> torch.Tensor:
    """log p(u | location) up to a constant, for a photo made at a location of unit feature w
    without displacement: u = normalise(w + s n), n ~ N(0, I / dim), as a function of
    t = cos(u, w). With sigma^2 = s^2 / dim, the radius r of w + s n integrated out by
    Laplace's method: d log p / dt = r*(t) / sigma^2, r* = (t + sqrt(t^2 + 4 (dim - 1) sigma^2)) / 2,
    whose integral is written below (about 150 t at the calibrated level: the zero-shot
    temperature). Exact to Laplace's error, which is tiny at dim = 512."""
    s2 = (noise.isotropic ** 2) / dim
    if s2 <= 0:
        raise ValueError("the likelihood needs isotropic noise above zero")
    a = 4.0 * (dim - 1) * s2
    t = cos.double()
    root = torch.sqrt(t * t + a)
    return ((t * t / 2 + (t * root + a * torch.log(t + root)) / 2) / (2 * s2)).to(cos.dtype)


def bayes_decoder(noise: NoiseModel, split: str = "train", top: int = 1024):
    """The Bayes decoder of the pseudo-photos' own distribution, model-free: over the
    support points (every city at its own coordinates, GeoCLIP's gallery, each filed under
    a city), the exact isotropic-noise likelihood (:func:`noise_log_likelihood`) times the
    prior that draws the photos: half the photos at gallery points (uniform), half at cities
    (by population, at least 1,000), only points of ``split``'s cells. Each level's answer is
    the place of largest posterior mass (its ``top`` likeliest points per photo). It knows
    where photos are drawn, not which kind of location a photo stands on: a ceiling, in
    expectation, for a decoder trained on this distribution (the displaced share is left
    out of the likelihood: spreading each point's mass over its displacement kernel moved
    no level by more than 0.1 point on 2,000 validation photos per source)."""
    from hierloc.data.pseudo_photos import in_split
    from hierloc.model.support import location_log_prior, support_ancestors

    cache: dict = {}

    @torch.inference_mode()
    def decode(space: Space, u: torch.Tensor) -> Decoded:
        post, table = space.posterior, space.table
        if "prior" not in cache:  # -inf outside the split
            ll = post.support_latlon.numpy()
            keep = torch.from_numpy(in_split(ll[:, 0], ll[:, 1], split))
            cache["prior"] = location_log_prior(table, len(ll), 0.5, keep)
            cache["ancestors"] = support_ancestors(post)
        anc = cache["ancestors"]
        paths = []
        for part in u.split(256):
            logit = noise_log_likelihood(part.float() @ post.support.T, noise) + cache["prior"]
            val, idx = logit.topk(min(top, logit.shape[1]), dim=1)
            w = torch.softmax(val, dim=1)
            paths.append(torch.stack([torch.zeros(len(part), table.level_size(lv)).scatter_add_(1, anc[lv][idx], w)
                                      .argmax(1) for lv in range(4)], 1))
        paths = torch.cat(paths).numpy()
        rows = paths[:, 3] + table.level_slice("city").start
        return Decoded(keys_of_paths(table, paths), table.lat_deg[rows], table.lon_deg[rows])

    return decode


DECODERS = {
    "GeoCLIP gallery retrieval": decode_gallery,
    "flat nearest city": decode_flat_city,
    "zero-shot, centroid beam (before)": decode_centroid_beam,
    "zero-shot, tree posterior (shipped)": decode_tree_posterior,
}
BASELINES = ("GeoCLIP gallery retrieval", "flat nearest city")


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def score(space: Space, dec: Decoded, lat, lon, truth: dict) -> dict:
    rg_keys = space.keys_of_city_rows(space.rg.lookup(dec.lat_deg, dec.lon_deg))
    return all_metrics(dec.lat_deg, dec.lon_deg, lat, lon, pred_keys=dec.keys, true_keys=truth, rg_keys=rg_keys)


def paired(hits: dict, baselines=BASELINES) -> dict:
    """Every decoder that is not a baseline against each baseline present, per level, on
    the same photos (metrics.paired_difference): decoder -> baseline -> level -> gap."""
    return {name: {b: {lv: paired_difference(h[lv], hits[b][lv]) for lv in h if lv in hits[b]}
                   for b in baselines if b in hits}
            for name, h in hits.items() if name not in baselines}


def run(n_photos: int = 1000, where: str = "cities", locations=None, levels=DEFAULT_LEVELS,
        noise: NoiseModel = CALIBRATED, decoders: dict | None = None, seed: int = 0, space: Space | None = None,
        split: str = "all") -> dict:
    """Every decoder on the same photos at every noise level -> results (JSON-ready)."""
    t0 = time.perf_counter()
    space = space or Space()
    if locations is not None:
        lat, lon = read_locations(locations)
        where = str(locations)
    else:
        lat, lon = sample_locations(n_photos, where, seed, table=space.table, split=split)
    truth = space.truth(lat, lon)
    decoders = decoders or DECODERS
    out = {"benchmark": "GeoCLIP-space proxy (GeoCLIP's pretrained location encoder + calibrated noise); "
                        "not accuracy on real photos",
           "photos": int(len(lat)), "locations": where, "split": split if locations is None else "all",
           "seed": seed, "noise_model": asdict(noise),
           "countries": int(len(set(truth["country"]))), "levels": []}
    for level in levels:
        u = photo_features(space.encoder, lat, lon, noise.at(level), seed=seed + 1)
        results, hits = {}, {}
        for name, fn in decoders.items():
            t = time.perf_counter()
            dec = fn(space, u)
            results[name] = score(space, dec, lat, lon, truth)
            hits[name] = level_hits(dec.keys, truth)
            results[name]["seconds"] = round(time.perf_counter() - t, 2)
            log.info("noise x%s %s: country %.1f%%, GeoScore %.0f (%.1f s)", level, name,
                     100 * results[name]["accuracy"]["country"], results[name]["geoscore"], results[name]["seconds"])
        out["levels"].append({"level": level, "noise": asdict(noise.at(level)), "results": results,
                              "paired": paired(hits)})
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def shortfall(results: dict, decoder: str, baselines=BASELINES) -> dict:
    """Per metric, how many points ``decoder`` is below the best baseline (negative: above).
    Metrics: the four level accuracies (%) and GeoScore (in points of 5000 / 100)."""
    out = {}
    for lv in LEVELS:
        best = max(results[b]["accuracy"][lv] for b in baselines)
        out[lv] = round(100 * (best - results[decoder]["accuracy"][lv]), 2)
    best = max(results[b]["geoscore"] for b in baselines)
    out["geoscore"] = round((best - results[decoder]["geoscore"]) / 50.0, 2)
    return out


def paired_lines(gaps: dict) -> list[str]:
    """A level block's paired gaps (:func:`paired`) as markdown lines."""
    lines = ["Paired on the same photos: accuracy points ahead (negative: behind), "
             "95 % interval in brackets, country / region / sub-region / city:", ""]
    for name, against in gaps.items():
        for base, per_level in against.items():
            cells = " / ".join(f"{g['diff']:+.1f} [{g['low']:+.1f}, {g['high']:+.1f}]" for g in per_level.values())
            lines.append(f"- {name} against {base}: {cells}")
    return lines


def markdown(res: dict) -> str:
    """One table per noise level, every decoder a row, plus the published Im2GPS3k rows."""
    km = " | ".join(f"{t} km" for t in THRESHOLDS_KM)
    held = {"test": " in held-out cells", "train": " in training cells"}.get(res.get("split"), "")
    lines = [f"GeoCLIP-space proxy benchmark: {res['photos']} photo locations ({res['locations']}{held}, "
             f"{res['countries']} countries), seed {res['seed']}. Not accuracy on real photos.", ""]
    for block in res["levels"]:
        nm = block["noise"]
        lines += [f"Noise x{block['level']:g} (isotropic s = {nm['isotropic']:.2f}, "
                  f"{100 * nm['share_displaced']:.0f}% displaced, median {nm['displace_median_km']:.0f} km):", "",
                  f"| decoder | country | region | sub-region | city | {km} | median km | GeoScore |",
                  "|---" * (7 + len(THRESHOLDS_KM)) + "|"]
        for name, m in block["results"].items():
            acc = " | ".join(f"{100 * m['accuracy'][lv]:.1f}" for lv in LEVELS)
            within = " | ".join(f"{100 * m['acc_km'][str(t)]:.1f}" for t in THRESHOLDS_KM)
            lines.append(f"| {name} | {acc} | {within} | {m['median_km']:.1f} | {m['geoscore']:.0f} |")
        lines.append("")
        if block.get("paired"):
            lines += [*paired_lines(block["paired"]), ""]
    cal = next((b for b in res["levels"] if b["level"] == 1.0), None)
    if cal and "GeoCLIP gallery retrieval" in cal["results"]:
        got = cal["results"]["GeoCLIP gallery retrieval"]["acc_km"]
        lines.append("Calibration: GeoCLIP's own decoder at x1 gives "
                     + "/".join(f"{100 * got[str(t)]:.1f}" for t in THRESHOLDS_KM)
                     + " % within 1/25/200/750/2500 km; published on Im2GPS3k: "
                     + "/".join(str(v) for v in PUBLISHED_IM2GPS3K["GeoCLIP"]) + ".")
    lines += ["Published Im2GPS3k (real photos), % within 1/25/200/750/2500 km: "
              + "; ".join(f"{k} {'/'.join(str(v) for v in vals)}" for k, vals in PUBLISHED_IM2GPS3K.items())]
    return "\n".join(lines)


def write(res: dict, out: Path) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "geoclip_bench.json").write_text(json.dumps(res, indent=2))
    (out / "geoclip_bench.md").write_text(markdown(res) + "\n")
