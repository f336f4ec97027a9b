"""The training-free profile: GeoCLIP's published encoders, decoded over the place tree.

Photo: CLIP ViT-L/14 (OpenAI weights, through transformers exactly as GeoCLIP loads
them, same CLIPImageProcessor) -> CLIP image projection (768) -> GeoCLIP's image MLP
(768 -> 768 -> 512, weights in the geoclip wheel) -> unit vector u.

Decoding (:class:`TreePosterior`): GeoCLIP scores a photo against a location by the
cosine s = u . w, w the unit location feature. The posterior lives on *support points*:
every city of the hierarchy (its own coordinates) and the 100k GPS gallery that ships in
the geoclip wheel (a real sample of where photos are taken), each gallery point filed
under the city the benchmark's reverse geocoding gives it. p(point) is proportional to
exp(T s); a place's mass is the sum over the support points below it (a logsumexp up
the tree), so a country is judged by everything inside it, never by its centroid.
The answer goes down the tree greedily: the country of largest mass, its region of
largest mass, its sub-region of largest mass, and there the city of largest mass with
its own point counted CITY_WEIGHT times (see there why). The GPS is the best support
point of the chosen city. What is shown (each level's confidence, the candidates, the
map's and the disk's distributions) is the posterior with a temperature per level fitted
on validation photos (infer.confidence; CONFIDENCE_TEMPERATURES): the masses themselves
are overconfident. Candidates are the cities most probable as shown.

Why not the centroid: a country's centroid is a poor stand-in for the country (a photo
in Seattle is nearer, in GeoCLIP's space, to Vancouver than to the centroid of the
United States), so beam search over centroid directions loses countries whose photo
lies far from the middle (measured in the GeoCLIP-space benchmark, eval.geoclip_bench).

Embedding (what the Poincare disk and Explore draw): the photo goes to z = exp_0(rho u),
every place of level l to h = exp_0(r_l w_place), with fixed radii (rho, r_l > 0) that
grow with the level and w_place the normalised mean of the unit features of the support
points below the place (its cities and gallery points).

Claim: within a level, ranking places by geodesic distance to z is ranking them by
cosine between u and w_place (the disk shows that similarity faithfully; the decoder
above uses the finer posterior, so the disk's nearest place need not be the answer).
Proof: exp_0 is an isometry along rays from the origin and preserves the angle theta
between u and w at the origin, with cos theta = u . w = s (both unit vectors). The
hyperbolic law of cosines for the triangle (origin, z, h), curvature -1/K, R = sqrt(K):
    cosh(d/R) = cosh(rho/R) cosh(r_l/R) - sinh(rho/R) sinh(r_l/R) s.
For fixed rho, r_l > 0 the right side is strictly decreasing in s, and cosh is strictly
increasing on d >= 0, so d(z, h) is strictly decreasing in s. Hence the order by
distance is the reverse of the order by s: the same ranking. (Across levels the radii
differ, which is what places countries near the centre and cities near the rim.)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hierloc.infer.confidence import CITY_DISTRIBUTION, read_marginals, scatter_logsumexp, tree_log_marginals
from hierloc.manifold import lorentz as L

log = logging.getLogger(__name__)

CLIP_REPO = "openai/clip-vit-large-patch14"
PHOTO_RADIUS = 3.5
LEVEL_RADII = (1.0, 2.0, 3.0, 4.0)


class ZeroShotUnavailable(RuntimeError):
    """CLIP ViT-L/14 weights missing and no network; the message says what to do."""


def geoclip_package_dir() -> Path:
    """The geoclip wheel's folder, found without importing it (its __init__ imports
    transformers: seconds, on every checkpoint load that only needs its data files)."""
    import importlib.util

    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError("the geoclip package is not installed: pip install -r requirements.txt")
    return Path(spec.origin).parent


def geoclip_weights_dir() -> Path:
    return geoclip_package_dir() / "model" / "weights"


class GeoCLIPImagePath(nn.Module):
    """CLIP vision tower + projection + GeoCLIP's image MLP: pixels (B,3,224,224) -> (B, 512)."""

    def __init__(self, vision, processor):
        super().__init__()
        self.vision = vision  # transformers CLIPVisionModelWithProjection
        self.processor = processor  # transformers CLIPImageProcessor
        self.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))

    def load_geoclip_mlp(self) -> "GeoCLIPImagePath":
        state = torch.load(geoclip_weights_dir() / "image_encoder_mlp_weights.pth", map_location="cpu",
                           weights_only=True)
        self.mlp.load_state_dict(state)
        return self

    def preprocess(self, images) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        emb = self.vision(pixel_values=pixels).image_embeds  # (B, 768) CLIP image features
        return self.mlp(emb)


RANDOM_SEED = 0
"""random_weights are drawn from this seed: the same random model in every run (so that
its fast path, cached by its weights, is built once)."""


def load_image_path(device="cpu", random_weights: bool = False) -> GeoCLIPImagePath:
    """The zero-shot photo encoder. random_weights builds the architecture only (tests, benchmarks)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if random_weights:
        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, patch_size=14, projection_dim=768)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            vision = CLIPVisionModelWithProjection(cfg)
        processor = CLIPImageProcessor()
    else:
        from hierloc.hub import cached_file, hub_reachable

        if cached_file(CLIP_REPO, ["model.safetensors", "pytorch_model.bin"]) is None and not hub_reachable():
            raise ZeroShotUnavailable(
                f"CLIP ViT-L/14 weights ({CLIP_REPO}) are not cached and the Hugging Face hub cannot be "
                f"reached. Run `python -m hierloc download zero-shot` on a machine with internet.")
        try:
            vision = CLIPVisionModelWithProjection.from_pretrained(CLIP_REPO)
            processor = CLIPImageProcessor.from_pretrained(CLIP_REPO)
        except Exception as exc:
            raise ZeroShotUnavailable(f"could not load {CLIP_REPO} ({type(exc).__name__}: {exc}); run "
                                      f"`python -m hierloc download zero-shot` with internet") from None
    model = GeoCLIPImagePath(vision, processor).load_geoclip_mlp()
    return model.eval().to(device)


def image_path_for(device="cpu", random_weights: bool = False, fast: str | None = None, background: bool = True):
    """The image path the app answers with: on a CPU the ONNX Runtime fast path once it is
    built (infer.fast_encoder; built in the background the first time, eager PyTorch
    meanwhile), the eager path elsewhere or with HIERLOC_FAST=off."""
    from hierloc.infer.fast_encoder import SwitchingImagePath

    eager = load_image_path(device, random_weights)
    if str(device) != "cpu":
        return eager
    return SwitchingImagePath(eager, mode=fast, background=background)


def photo_points(u: torch.Tensor, K: float = 1.0) -> torch.Tensor:
    """(B, 512) GeoCLIP photo features -> (B, 513) Lorentz points at radius PHOTO_RADIUS."""
    u = nn.functional.normalize(u if u.dtype == torch.float64 else u.float(), dim=-1)
    return L.exp0(PHOTO_RADIUS * u, K)


def place_points(location_feats: list[torch.Tensor], K: float = 1.0) -> list[torch.Tensor]:
    """Per level (N_l, 512) GeoCLIP location features -> (N_l, 513) points at radius r_l."""
    return [L.exp0(r * nn.functional.normalize(f if f.dtype == torch.float64 else f.float(), dim=-1), K)
            for r, f in zip(LEVEL_RADII, location_feats)]


# ---------------------------------------------------------------------------------------
# the decoder: a posterior over support points, summed up the tree
# ---------------------------------------------------------------------------------------
POSTERIOR_TEMPERATURE = 150.0
"""T in p(point) ~ exp(T cos). Chosen on the GeoCLIP-space benchmark (eval.geoclip_bench):
at 40 (GeoCLIP's own logit scale) the mass spreads too wide and countries are lost;
between 100 and 200 every noise level is within a point of the best baseline."""
CITY_WEIGHT = 30.0
"""At the last step a city's own point weighs as much as this many gallery points: a
city is where photos are taken, and without it, mass favours a big city's many gallery
points over the small town the photo is in (-2 points of city accuracy without noise),
while the city's own point alone ignores the gallery's evidence under noise (-8.6 points
on gallery locations). Measured on the GeoCLIP-space benchmark: 30 is within a point of
the best baseline on both kinds of photo locations; 1 and infinity are not."""
CONFIDENCE_TEMPERATURES = (1.8206, 2.1147, 2.1147, 1.6475)
"""Each level's temperature for the confidences shown (infer.confidence; no answer depends
on them), fitted by `python -m hierloc calibrate zero-shot` on 2,000 GeoCLIP-space
validation photos per kind of location (a proxy, not real photos). The masses themselves
(1 at every level) are overconfident there: countries shown at 90% on average are right
80% of the time, cities shown at 61-66% are right 41-43% of the time (calibration error
10 to 23 points at each level; 3 to 5 with these)."""
GALLERY_FILE = "gps_gallery/coordinates_100K.csv"


def gallery_latlon() -> np.ndarray:
    """GeoCLIP's 100k GPS gallery (shipped in the geoclip wheel): (G, 2) degrees, (lat, lon)."""
    import pandas as pd

    df = pd.read_csv(geoclip_package_dir() / "model" / GALLERY_FILE)
    return df[["LAT", "LON"]].to_numpy(dtype=np.float64)


@torch.inference_mode()
def gallery_features(cache: Path | None = None, batch: int = 8192) -> torch.Tensor:
    """Unit GeoCLIP location features of the gallery, (G, 512) float32, cached (float16)."""
    from safetensors.torch import load_file, save_file

    from hierloc.data.place_features import load_geoclip_location_encoder
    from hierloc.paths import cache_dir

    cache = cache or cache_dir() / "location" / "geoclip_gallery_100k.safetensors"
    if cache.exists():
        return load_file(str(cache))["features"].float()
    enc = load_geoclip_location_encoder()
    latlon = torch.as_tensor(gallery_latlon(), dtype=torch.float32)
    f = torch.cat([enc(latlon[i:i + batch]) for i in range(0, len(latlon), batch)])
    f = nn.functional.normalize(f, dim=-1).half()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"features": f.contiguous()}, str(tmp))
    tmp.replace(cache)
    return f.float()


GALLERY_ENV = "HIERLOC_GALLERY"


def location_unit_cached(latlon: np.ndarray) -> torch.Tensor:
    """Unit GeoCLIP location features of points (M, 2) degrees -> (M, 512), cached by the
    points' own bytes (HIERLOC_CACHE/location/gallery-<hash>)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from hierloc.data.place_features import load_geoclip_location_encoder
    from hierloc.paths import cache_dir

    ll = np.ascontiguousarray(latlon, dtype=np.float64)
    cache = cache_dir() / "location" / f"gallery-{hashlib.sha256(ll.tobytes()).hexdigest()[:20]}.safetensors"
    if cache.exists():
        return load_file(str(cache))["features"].float()
    enc = load_geoclip_location_encoder()
    pts = torch.as_tensor(ll, dtype=torch.float32)
    with torch.inference_mode():
        f = torch.cat([enc(pts[i:i + 8192]) for i in range(0, len(pts), 8192)])
    f = nn.functional.normalize(f, dim=-1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"features": f.half().contiguous()}, str(tmp))
    tmp.replace(cache)
    return f


def custom_gallery(source) -> np.ndarray:
    """Your own locations for zero-shot's posterior: a CSV of latitude/longitude (also
    lat/lon), or a folder of photos (their GPS, from EXIF). -> (M, 2) degrees."""
    from pathlib import Path

    p = Path(source)
    if p.is_dir():
        from hierloc.infer.batch import expand_inputs
        from hierloc.images import read_exif_gps

        pts = [g for g in (read_exif_gps(f) for f in expand_inputs([str(p)])) if g is not None]
        if not pts:
            raise ValueError(f"no photo in {p} has a GPS position in its EXIF: nothing to add to the gallery")
        return np.array([[g.lat_deg, g.lon_deg] for g in pts], dtype=np.float64)
    if not p.exists():
        raise FileNotFoundError(f"gallery {p} does not exist (give a CSV of latitude, longitude or a folder of photos)")
    from hierloc.data.pseudo_photos import read_locations

    lat, lon = read_locations(p)
    return np.stack([lat, lon], 1)


def _file_under_cities(table, latlon: np.ndarray) -> np.ndarray:
    """City rows of points: the benchmark's reverse geocoding when the table is the
    GeoNames one it needs, else the nearest city of the table on the sphere."""
    from hierloc.geo.reverse import benchmark_geocoder

    try:
        return benchmark_geocoder(table).lookup(latlon[:, 0], latlon[:, 1])
    except ValueError:
        from scipy.spatial import cKDTree

        from hierloc.geo.distance import unit_vectors

        city = table.level_slice("city")
        tree = cKDTree(unit_vectors(table.lat_deg[city], table.lon_deg[city]))
        return tree.query(unit_vectors(latlon[:, 0], latlon[:, 1]))[1] + city.start


def _gallery_cities(table, latlon: np.ndarray) -> np.ndarray:
    """_file_under_cities of the gallery, cached by the table's and the points' hashes (the
    reverse geocoding of 100k points is most of a checkpoint's load otherwise)."""
    import hashlib
    import os

    from hierloc.paths import cache_dir

    digest = hashlib.sha256(np.ascontiguousarray(latlon, dtype=np.float64).tobytes()).hexdigest()[:16]
    cache = cache_dir() / "location" / f"gallery-cities-{table.content_hash()[:16]}-{digest}.npy"
    if cache.exists():
        try:
            rows = np.load(cache, allow_pickle=False)
            if rows.shape == (len(latlon),):
                return rows
        except (OSError, ValueError):
            pass  # a broken cache file: file them again
    rows = _file_under_cities(table, latlon)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")  # the app and a benchmark may file at once
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(rows, dtype=np.int64), allow_pickle=False)
    tmp.replace(cache)
    return rows


class TreePosterior:
    """Decode GeoCLIP photo features over the place tree (see the module docstring).

    support_unit (S, 512) unit location features of the support points, the cities'
    own points first, in order (support point c is city c); support_city (S,) the local
    city index of each; support_latlon (S, 2) degrees; parents[l] (N_l,)
    local parent index in level l-1 for l = 1..3; sizes the places per level."""

    def __init__(self, support_unit, support_city, support_latlon, parents, sizes,
                 temperature: float = POSTERIOR_TEMPERATURE):
        self.support = support_unit.float()
        self.support_city = torch.as_tensor(support_city, dtype=torch.long)
        self.support_latlon = torch.as_tensor(support_latlon, dtype=torch.float64)
        self.parents = [None] + [torch.as_tensor(p, dtype=torch.long) for p in parents[1:]]
        self.sizes = tuple(int(s) for s in sizes)
        self.temperature = float(temperature)
        self.confidence_temperatures = CONFIDENCE_TEMPERATURES
        # the support points of each city as CSR (order sorted by city)
        self._order = torch.argsort(self.support_city, stable=True)
        counts = torch.bincount(self.support_city, minlength=self.sizes[3])
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])

    @classmethod
    def for_table(cls, table, city_features: torch.Tensor, with_gallery: bool = True,
                  temperature: float = POSTERIOR_TEMPERATURE, extra_latlon: np.ndarray | None = None) -> "TreePosterior":
        """Cities of ``table`` (features (N_city, 512)) plus, by default, the gallery, plus
        ``extra_latlon`` (M, 2) degrees: a custom gallery of your own locations (see
        custom_gallery), filed under their cities like GeoCLIP's."""
        city = table.level_slice("city")
        n_city = city.stop - city.start
        unit = [nn.functional.normalize(city_features.float(), dim=-1)]
        cities = [np.arange(n_city)]
        latlon = [np.stack([table.lat_deg[city], table.lon_deg[city]], 1)]
        if with_gallery:
            g_ll = gallery_latlon()
            unit.append(gallery_features())
            cities.append(_gallery_cities(table, g_ll) - city.start)
            latlon.append(g_ll)
        if extra_latlon is not None and len(extra_latlon):
            extra_latlon = np.asarray(extra_latlon, dtype=np.float64)
            unit.append(location_unit_cached(extra_latlon))
            cities.append(_file_under_cities(table, extra_latlon) - city.start)
            latlon.append(extra_latlon)
        parents = [None] + [table.parent_within_level(lv) for lv in range(1, 4)]
        return cls(torch.cat(unit), np.concatenate(cities), np.concatenate(latlon), parents,
                   [table.level_size(lv) for lv in range(4)], temperature)

    def place_directions(self) -> list[torch.Tensor]:
        """Per level (N_l, 512): normalised mean unit feature of the support points below."""
        sums = torch.zeros(self.sizes[3], self.support.shape[1]).index_add_(0, self.support_city, self.support)
        out = [sums]
        for lv in (3, 2, 1):
            out.insert(0, torch.zeros(self.sizes[lv - 1], sums.shape[1]).index_add_(0, self.parents[lv], out[0]))
        return [nn.functional.normalize(o, dim=-1) for o in out]

    def level_log_mass(self, u: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, 512) -> per level (B, N_l) log posterior mass (normalised), and the support
        logits (B, S)."""
        u = nn.functional.normalize(u.float(), dim=-1)
        logits = self.temperature * (u @ self.support.T)  # (B, S)
        mass = [None, None, None, scatter_logsumexp(logits, self.support_city, self.sizes[3])]
        for lv in (3, 2, 1):
            mass[lv - 1] = scatter_logsumexp(mass[lv], self.parents[lv], self.sizes[lv - 1])
        total = torch.logsumexp(mass[0], dim=1, keepdim=True)  # (B, 1)
        return [m - total for m in mass], logits

    @torch.inference_mode()
    def search(self, u: torch.Tensor, k: int = 10, chunk: int = 256):
        """(B, 512) photo features -> SearchResult (paths (B, k, 4) local indices; the greedy
        answer first, then the other cities most probable as shown; score = log of that
        probability; gps (B, k, 2) the best support point of each city; what is shown, the masses
        with the confidence temperatures (infer.confidence): confidence (B, 4) of the
        answer's places, probability (B, k) of each path's city, levels every country's and
        region's, cities the CITY_DISTRIBUTION most probable)."""
        from hierloc.infer.beam import SearchResult

        parts = [self._search(u[i:i + chunk], k) for i in range(0, u.shape[0], chunk)]
        return SearchResult(*(torch.cat([getattr(p, f) for p in parts]) for f in
                              ("paths", "sq_dist", "score", "confidence", "gps", "probability")),
                            levels=tuple(torch.cat([p.levels[i] for p in parts]) for i in range(2)),
                            cities=tuple(torch.cat([p.cities[i] for p in parts]) for i in range(2)))

    def _search(self, u: torch.Tensor, k: int):
        from hierloc.infer.beam import SearchResult

        mass, logits = self.level_log_mass(u)
        total = torch.logsumexp(logits, dim=1, keepdim=True)  # (B, 1) the normaliser of the masses
        B = u.shape[0]
        choice = mass[0].argmax(1)  # (B,) the country of largest mass
        answer = [choice]
        for lv in (1, 2, 3):  # its child of largest mass, down to the sub-region
            inside = self.parents[lv][None, :] == choice[:, None]  # (B, N_l)
            # places by their mass; a city's own point (support index = city) counts CITY_WEIGHT times
            score = mass[lv] if lv < 3 else torch.logaddexp(
                mass[3], logits[:, :self.sizes[3]] - total + math.log(CITY_WEIGHT - 1))
            choice = torch.where(inside, score, torch.full_like(score, -torch.inf)).argmax(1)
            answer.append(choice)
        answer = torch.stack(answer, 1)  # (B, 4)
        kk = min(k, self.sizes[3])
        # what is shown: the masses with each level's confidence temperature (infer.confidence)
        marginals = tree_log_marginals(mass, self.parents, self.confidence_temperatures)
        top = torch.topk(marginals[3], kk + 1, dim=1).indices  # (B, kk + 1) cities by what is shown
        rest = [row[row != a][:kk - 1] for row, a in zip(top, answer[:, 3])]
        cities = torch.stack([torch.cat([a[None], r]) for a, r in zip(answer[:, 3], rest)])  # (B, kk)
        paths = torch.empty((B, kk, 4), dtype=torch.long)
        paths[:, :, 3] = cities
        for lv in (3, 2, 1):
            paths[:, :, lv - 1] = self.parents[lv][paths[:, :, lv]]
        paths[:, 0] = answer
        log_p = marginals[3].gather(1, cities)  # (B, kk)
        gps = self.support_latlon[self._best_support(logits, cities)]  # (B, kk, 2)
        sq = torch.stack([-mass[lv].gather(1, paths[:, :, lv]) for lv in range(4)], -1)  # (B, kk, 4)
        shown = read_marginals(marginals, paths, CITY_DISTRIBUTION)
        return SearchResult(paths, sq, log_p, shown["confidence"], gps, shown["probability"], shown["levels"],
                            shown["cities"])

    def _best_support(self, logits: torch.Tensor, cities: torch.Tensor) -> torch.Tensor:
        """The support point of largest logit inside each city: (B, S), (B, kk) -> (B, kk)."""
        B, kk = cities.shape
        c = cities.reshape(-1)  # (B * kk,)
        counts = self._offsets[c + 1] - self._offsets[c]  # every city holds itself: >= 1
        seg = torch.repeat_interleave(torch.arange(B * kk), counts)  # (T,)
        within = torch.arange(seg.shape[0]) - (torch.cumsum(counts, 0) - counts)[seg]
        point = self._order[self._offsets[c[seg]] + within]  # (T,) support indices
        val = logits[seg // kk, point]  # (T,)
        best = torch.full((B * kk,), -torch.inf, dtype=val.dtype).scatter_reduce(0, seg, val, "amax")
        pos = torch.where(val == best[seg], torch.arange(seg.shape[0]), seg.shape[0])  # first max wins
        first = torch.full((B * kk,), seg.shape[0], dtype=torch.long).scatter_reduce(0, seg, pos, "amin")
        return point[first].reshape(B, kk)
