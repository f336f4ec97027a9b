"""The HierLoc model: photo head, place encoder, cross-level attention, geometry, loss.

Shapes: B photos, F backbone feature size, D = embed_dim, p = point size (D + 1 for
Lorentz, D for Euclidean), N_l places at level l (0 country .. 3 city).

    photo:  feats (B, F) -> MLP -> (B, D) * alpha_img = v
            v += Fuse(concat_l Attn_l(query=v, keys=values=place tangents of level l))
            z = exp_0(v)                                  (B, p)
    place:  t = log_0(anchor) + alpha_node * MLP(concat of its features)   (N_l, D)
            h = exp_0(t)                                  (N_l, p)

With photo_head = "support" the photo instead attends over support points (model.support:
every city's own location feature and GeoCLIP's gallery points, each filed under a city):

    a = softmax over its top-k support points of T cos(feats, key_s) + prior_s          (B, k)
    prior_s = bias_s + bias_kind(s) + w_pop log population(s)   (a learned prior)
    v = sum_l mix_l sum_s a_s t_l(ancestor_l(s)) + alpha_img * MLP(feats)          (B, D)

the paper's cross-level attention with keys from the places' location features (the
entity branch's loc_i) and values the places' tangents at each of the 4 levels; the
image MLP is a residual that starts at zero. T, the biases (a learned prior over the
support points), the mix and the places are trained. The search's answer is a path of
places; its GPS is the attended support point of largest weight inside the answered city
(attended_gps).

Anchors are points of the manifold (geoopt ManifoldParameter, trained with
RiemannianAdam) when the geometry is Lorentz with a fixed curvature; with a learned
curvature, the Euclidean ablation or anchor_space = "tangent" they are tangent vectors
at the origin (AdamW; the place is exp_0 of it, the same point either way).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hierloc.losses import GeoWeightedLoss
from hierloc.manifold import lorentz as L
from hierloc.model.config import ModelConfig
from hierloc.model.geometry import Geometry

NUM_LEVELS = 4


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class CrossAttention(nn.Module):
    """Multi-head attention of B queries (photos) over N keys/values (a level's places).

    Uses torch's fused scaled_dot_product_attention, which never materialises the
    (B, N) score matrix on CPU or GPU, so a whole city level fits."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query (B, D), keys (N, D) -> context (B, D)."""
        B, N = query.shape[0], keys.shape[0]
        q = self.q(query).view(B, self.heads, self.head_dim).transpose(0, 1)[None]  # (1, H, B, dh)
        k = self.k(keys).view(N, self.heads, self.head_dim).transpose(0, 1)[None]  # (1, H, N, dh)
        v = self.v(keys).view(N, self.heads, self.head_dim).transpose(0, 1)[None]  # (1, H, N, dh)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (1, H, B, dh)
        return out[0].transpose(0, 1).reshape(B, -1)  # (B, D)


class HierLoc(nn.Module):
    def __init__(self, config: ModelConfig, place_latlon: list[torch.Tensor],
                 place_features: dict[str, list[torch.Tensor]] | None = None, support: dict | None = None,
                 init_anchors: bool = True):
        """place_latlon: per level (N_l, 2) centroids in degrees; place_features: per
        feature name of config.place_features, per level (N_l, dim); support: for
        photo_head "support", model.support.support_for_table(table); init_anchors=False
        leaves the places at the origin, for a loader that overwrites them (saves drawing
        a random direction for each place: 165k of them, 2 s of a 3 s load, on the shipped table)."""
        super().__init__()
        self.config = c = config
        if [len(t) for t in place_latlon] != list(c.num_places):
            raise ValueError(f"place_latlon sizes {[len(t) for t in place_latlon]} differ from "
                             f"config.num_places {list(c.num_places)}")
        gen = torch.Generator().manual_seed(c.seed)

        # curvature K: curvature is -1/K
        if c.learn_curvature:
            self.log_curvature = nn.Parameter(torch.tensor(math.log(c.curvature)))
        else:
            self.register_buffer("log_curvature", torch.tensor(math.log(c.curvature)), persistent=False)

        self.photo_mlp = _mlp(c.feat_dim, c.hidden_dim, c.embed_dim, c.dropout)
        self.log_alpha_img = nn.Parameter(torch.zeros(()))
        self.support_hash = None
        if c.photo_head == "support":
            self._init_support(support)

        for lv in range(NUM_LEVELS):
            self.register_buffer(f"latlon_{lv}", torch.as_tensor(place_latlon[lv], dtype=torch.float32), persistent=False)
        self._init_anchors(gen, init_anchors)

        self.feature_names = [n for n, _ in c.place_features]
        place_features = place_features or {}
        for name, dim in c.place_features:
            feats = place_features.get(name)
            if feats is None or [len(f) for f in feats] != list(c.num_places):
                raise ValueError(f"place feature {name!r} must be given for every place of every level")
            for lv, f in enumerate(feats):
                if f.shape[-1] != dim:
                    raise ValueError(f"place feature {name!r} has size {f.shape[-1]}, config says {dim}")
                self.register_buffer(f"feat_{name}_{lv}", torch.as_tensor(f).float(), persistent=False)
        if c.place_features:
            self.place_mlp = _mlp(sum(d for _, d in c.place_features), c.hidden_dim, c.embed_dim, c.dropout)
            self.log_alpha_node = nn.Parameter(torch.zeros(()))

        if c.attention:
            self.attn = nn.ModuleList(CrossAttention(c.embed_dim, c.attn_heads) for _ in range(NUM_LEVELS))
            self.fuse = _mlp(NUM_LEVELS * c.embed_dim, c.embed_dim, c.embed_dim, 0.0)
            nn.init.zeros_(self.fuse[-1].weight)  # start as the identity: v + 0
            nn.init.zeros_(self.fuse[-1].bias)

        self.criterion = GeoWeightedLoss(c.kernel, c.tau_init, c.lambda_init, c.sigma_init_km,
                                         c.betas, c.loss_chunk)
        self._cache: list[torch.Tensor] | None = None

    def _init_support(self, support: dict | None) -> None:
        c = self.config
        if support is None:
            raise ValueError("a support photo head needs its support points (model.support.support_for_table)")
        unit, anc = support["unit"], support["ancestors"]
        if unit.shape != (c.support_points, c.feat_dim) or [len(a) for a in anc] != [c.support_points] * NUM_LEVELS:
            raise ValueError(f"support points of shape {tuple(unit.shape)} do not match the config "
                             f"({c.support_points}, {c.feat_dim})")
        for lv, a in enumerate(anc):
            if int(a.min()) < 0 or int(a.max()) >= c.num_places[lv]:
                raise ValueError(f"support points name places outside level {lv}")
            self.register_buffer(f"support_ancestor_{lv}", torch.as_tensor(a, dtype=torch.long), persistent=False)
        self.register_buffer("support_unit", nn.functional.normalize(unit.float(), dim=-1), persistent=False)
        latlon = support.get("latlon")
        if latlon is not None:  # where each point is: the GPS the head answers with (attended_gps)
            if tuple(latlon.shape) != (c.support_points, 2):
                raise ValueError(f"support coordinates of shape {tuple(latlon.shape)}, not ({c.support_points}, 2)")
            self.register_buffer("support_latlon", torch.as_tensor(latlon, dtype=torch.float64), persistent=False)
        self.support_hash = support.get("hash")
        self.candidate_dtype = torch.float32  # the search for the top-k (bfloat16 where it is faster)
        self.support_bias = nn.Parameter(torch.zeros(c.support_points))
        # one more bias per kind of support point (a city's own point, or a gallery point):
        # the prior's mix of the two, learned quickly from every photo
        kind = support.get("kind")
        if kind is None:
            kind = torch.ones(c.support_points, dtype=torch.long)
            kind[:c.num_places[3]] = 0  # the cities' own points come first, in order
        kind = torch.as_tensor(kind, dtype=torch.long)
        self.register_buffer("support_kind", kind, persistent=False)
        # the group of each support point (a training photo's location cell): a photo of
        # the same group is not attended to in training (leave-one-cell-out), so that the
        # head learns from memory as it is used on photos of places it has not seen
        group = support.get("group")
        self.register_buffer("support_group", None if group is None else torch.as_tensor(group, dtype=torch.long),
                             persistent=False)
        self.support_kind_bias = nn.Parameter(torch.zeros(2))
        # a place feature of the cities' own points: log population (centred; 0 for the
        # other points and where unknown), with a learned weight that starts at 0
        logpop = support.get("log_population")
        logpop = torch.zeros(c.support_points) if logpop is None else torch.as_tensor(logpop, dtype=torch.float32)
        self.register_buffer("support_log_population", logpop, persistent=False)
        self.support_population_weight = nn.Parameter(torch.zeros(()))
        self.log_support_temperature = nn.Parameter(torch.tensor(math.log(c.support_temperature)))
        if c.extra.get("level_score") == "distance+memory":
            # the memory's mass floor per level, learned: how much probability a place with
            # no (other) training photo keeps
            self.support_log_floor = nn.Parameter(torch.full((NUM_LEVELS,), math.log(1e-2)))
        self.level_mix = nn.Parameter(torch.full((NUM_LEVELS,), 1.0 / NUM_LEVELS))
        nn.init.zeros_(self.photo_mlp[-1].weight)  # the image MLP starts as a zero residual
        nn.init.zeros_(self.photo_mlp[-1].bias)

    def support_attention(self, feats: torch.Tensor, prior: torch.Tensor | None = None,
                          exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F) -> (top-k support indices (B, k), attention weights (B, k)): the k support
        points of largest T cos + bias (found without gradient, in candidate_dtype), their
        weights recomputed exactly (gradients reach T and the biases). ``prior`` (S,), to
        read the attention under another prior than the learned one (-inf leaves a point out;
        eval.geoclip_bench.attention_posterior_decoder), takes no gradient. ``exclude`` (B,)
        group ids: the support points of a photo's own group are left out (training)."""
        u = nn.functional.normalize(feats.float(), dim=-1)
        T = self.log_support_temperature.exp()
        k = min(self.config.support_topk, self.config.support_points)
        with torch.no_grad():
            keys = self.support_unit
            if self.candidate_dtype != torch.float32:
                cached = getattr(self, "_keys_lowp", None)
                if cached is None or cached.dtype != self.candidate_dtype or cached.device != keys.device:
                    self._keys_lowp = cached = keys.to(self.candidate_dtype)
                keys = cached
            bias = (self.support_prior() if prior is None else prior).detach()
            parts = []
            for i, part in zip(range(0, len(u), 256), u.split(256)):
                logit = (part.to(keys.dtype) @ keys.T).float().mul_(T.detach()).add_(bias)
                if exclude is not None:
                    own = exclude[i:i + 256, None].to(keys.device) == self.support_group[None, :]
                    logit = logit.masked_fill(own, -torch.inf)
                parts.append(logit.topk(k, dim=1).indices)
            idx = torch.cat(parts)  # (B, k)
        if k == self.config.support_points:  # every point attended: one product, no (B, k, F) gather
            cos = (u @ self.support_unit.T).gather(1, idx)
        else:
            cos = torch.einsum("bd,bkd->bk", u, self.support_unit[idx])
        if prior is None:
            bias = (self.support_bias[idx] + self.support_kind_bias[self.support_kind[idx]]
                    + self.support_population_weight * self.support_log_population[idx])
        else:
            bias = prior.detach()[idx]
        logit = T * cos + bias
        if exclude is not None:
            logit = logit.masked_fill(self.support_group[idx] == exclude[:, None].to(idx.device), -torch.inf)
        return idx, torch.softmax(logit, dim=1)

    def support_log_mass(self, attention: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Per level (B, N_l): the log of the attention's mass on each place (the sum of the
        weights of its support points), the memory's own distribution over the places
        with the learned prior in it, plus the level's learned floor (support_log_floor),
        the mass a place keeps when none of its photos is attended."""
        idx, a = attention
        out = []
        floor = getattr(self, "support_log_floor", None)
        for lv in range(NUM_LEVELS):
            anc = getattr(self, f"support_ancestor_{lv}")[idx]  # (B, k)
            m = torch.zeros(a.shape[0], self.config.num_places[lv], dtype=a.dtype, device=a.device)
            m = m.scatter_add(1, anc, a)
            out.append((m + floor[lv].exp()).log() if floor is not None else m.clamp_min(1e-12).log())
        return out

    @property
    def answers_from_tree(self) -> bool:
        """Whether the answer is read from the tree distribution (eval.evaluate.tree_answer)
        instead of the beam search's best path."""
        return self.scores_memory or self.remembers_your_photos or self.config.extra.get("answer") == "tree"

    @property
    def remembers_your_photos(self) -> bool:
        return "your_photos" in self.config.extra

    def attach_your_photos(self, memory: dict, params: dict) -> None:
        """A memory of your photos beside the model (train.own_model.with_your_photos):
        memory {"unit" (M, F) keys, "ancestors" [4 x (M,)] local place ids, "latlon" (M, 2)};
        params {"count", "temperature", "weights" (4,), "floor"}, kept in config.extra."""
        from dataclasses import replace

        anc = [torch.as_tensor(a, dtype=torch.long) for a in memory["ancestors"]]
        for lv, a in enumerate(anc):
            if len(a) and (int(a.min()) < 0 or int(a.max()) >= self.config.num_places[lv]):
                raise ValueError(f"your photos name places outside level {lv}")
        self.your_memory = {"unit": nn.functional.normalize(torch.as_tensor(memory["unit"]).float(), dim=-1),
                            "ancestors": anc, "latlon": torch.as_tensor(memory["latlon"], dtype=torch.float64)}
        self.config = replace(self.config, extra={**self.config.extra, "your_photos": dict(params)})

    def your_log_mass(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Per level (B, N_l): the log of your photos' mass on each place (a softmax over
        them of T cos with the photo's feature), plus the floor."""
        p, mem = self.config.extra["your_photos"], self.your_memory
        u = nn.functional.normalize(feats.float(), dim=-1)
        a = torch.softmax(float(p["temperature"]) * (u @ mem["unit"].to(u.device).T), dim=1)  # (B, M)
        out = []
        for lv in range(NUM_LEVELS):
            m = torch.zeros(u.shape[0], self.config.num_places[lv], dtype=a.dtype, device=u.device)
            out.append((m.index_add_(1, mem["ancestors"][lv].to(u.device), a) + float(p["floor"])).log())
        return out

    @property
    def scores_memory(self) -> bool:
        """Whether a place's score adds the log of the support attention's mass on it to
        -d^2 / tau (the own-photos recipe, train.own_model), and the answer is read from
        the tree distribution."""
        return self.config.photo_head == "support" and self.config.extra.get("level_score") == "distance+memory"

    @torch.no_grad()
    def attended_gps(self, attention: tuple[torch.Tensor, torch.Tensor], cities: torch.Tensor) -> torch.Tensor:
        """Where the photo is within each of its answer's cities: the support point of
        largest attention weight among those the photo attends to in that city (as the
        zero-shot decoder places a photo at its best support point), else the city's
        centroid (no attended point in it, or no coordinates given for the points).
        attention (support indices (B, k), weights (B, k)) from support_attention; cities
        (B, kk) local indices (-1: no path) -> (B, kk, 2) degrees (float64)."""
        centroid = self.latlon_3.double()[cities.clamp_min(0)]  # (B, kk, 2)
        latlon = getattr(self, "support_latlon", None)
        if latlon is None:
            return centroid
        idx, a = attention
        inside = self.support_ancestor_3[idx][:, None, :] == cities[:, :, None]  # (B, kk, k)
        best = torch.where(inside, a[:, None, :].float(), -1.0).argmax(-1)  # (B, kk) column in idx
        point = latlon[idx.gather(1, best)]  # (B, kk, 2)
        return torch.where(inside.any(-1, keepdim=True), point, centroid)

    def support_prior(self) -> torch.Tensor:
        """(S,) the learned log prior of every support point (up to a constant). Outside
        training it is kept until one of its parameters changes (their version counters
        say so): 242k sums per photo otherwise, about a sixth of the head's time on a CPU."""
        parts = (self.support_bias, self.support_kind_bias, self.support_population_weight)
        if not torch.is_grad_enabled() or not any(p.requires_grad for p in parts):
            key = tuple((t.data_ptr(), t._version) for t in (*parts, self.support_log_population, self.support_kind))
            cached = getattr(self, "_prior_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
            with torch.no_grad():
                prior = self._prior_sum()
            self._prior_cache = (key, prior)
            return prior
        return self._prior_sum()

    def _prior_sum(self) -> torch.Tensor:
        return (self.support_bias + self.support_kind_bias[self.support_kind]
                + self.support_population_weight * self.support_log_population)

    # ---- geometry --------------------------------------------------------------------
    @property
    def curvature(self) -> torch.Tensor:
        lo, hi = self.config.curvature_range
        return self.log_curvature.exp().clamp(lo, hi)

    @property
    def geometry(self) -> Geometry:
        K = self.curvature if self.config.learn_curvature else float(self.config.curvature)
        return Geometry(self.config.geometry, K)

    @property
    def manifold_anchors(self) -> bool:
        c = self.config
        return c.geometry == "lorentz" and not c.learn_curvature and c.anchor_space == "manifold"

    def _init_anchors(self, gen: torch.Generator, random: bool = True) -> None:
        """Anchors start in the direction of a fixed random projection of the place's
        position on the globe (nearby places start nearby), at a distance from the origin
        that grows with the level (countries near the centre, cities near the rim); with
        random=False at the origin (to be overwritten)."""
        c = self.config
        proj = torch.randn(3, c.embed_dim, generator=gen, dtype=torch.float64)  # (3, D)
        for lv in range(NUM_LEVELS):
            ll = getattr(self, f"latlon_{lv}").double()
            if not random:
                t = torch.zeros(len(ll), c.embed_dim)
            else:
                lat, lon = torch.deg2rad(ll[:, 0]), torch.deg2rad(ll[:, 1])
                xyz = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)  # (N, 3)
                direction = xyz @ proj + 0.05 * torch.randn(len(ll), c.embed_dim, generator=gen, dtype=torch.float64)
                t = (direction / direction.norm(dim=-1, keepdim=True) * c.anchor_norms[lv]).float()  # (N, D)
            if self.manifold_anchors:
                import geoopt

                param = geoopt.ManifoldParameter(L.exp0(t, c.curvature), manifold=geoopt.Lorentz(k=c.curvature))
            else:
                param = nn.Parameter(t)
            self.register_parameter(f"anchor_{lv}", param)

    @torch.no_grad()
    def clamp_anchors(self, max_norm: float) -> int:
        """Pull anchors whose tangent at the origin is longer than max_norm back to it (a
        projection after each optimiser step). Far out, float32 Lorentz distances lose
        their precision (the inner products grow like e^(2r)) and then overflow; anchors
        that are only ever negatives (a sampled city nobody photographs) are otherwise
        pushed outward step after step. Returns how many were pulled in."""
        moved = 0
        for lv in range(NUM_LEVELS):
            a = getattr(self, f"anchor_{lv}")
            t = L.log0(a, self.config.curvature) if self.manifold_anchors else a
            n = t.norm(dim=-1, keepdim=True)
            far = (n > max_norm).squeeze(-1) | ~torch.isfinite(n).squeeze(-1)
            if far.any():
                fixed = t[far] * (max_norm / n[far].clamp_min(1e-12))
                fixed = torch.nan_to_num(fixed, nan=0.0)
                a[far] = L.exp0(fixed, self.config.curvature) if self.manifold_anchors else fixed
                moved += int(far.sum())
        return moved

    # ---- places ----------------------------------------------------------------------
    def place_latlon(self, level: int) -> torch.Tensor:
        return getattr(self, f"latlon_{level}")

    def anchor_tangent(self, level: int) -> torch.Tensor:
        a = getattr(self, f"anchor_{level}")
        return L.log0(a, self.config.curvature) if self.manifold_anchors else a

    def place_tangents(self, level: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Tangent vectors of the places of a level: all (N_l, D), or those of ``rows`` (R, D)."""
        a = getattr(self, f"anchor_{level}")
        a = a if rows is None else a[rows]
        t = L.log0(a, self.config.curvature) if self.manifold_anchors else a
        if self.feature_names:
            f = torch.cat([getattr(self, f"feat_{n}_{level}") for n in self.feature_names], dim=-1)  # (N, sum dims)
            t = t + self.log_alpha_node.exp() * self.place_mlp(f if rows is None else f[rows])
        return t

    def encode_places(self) -> list[torch.Tensor]:
        """Tangents of all levels (recomputed; use place_cache() at inference)."""
        return [self.place_tangents(lv) for lv in range(NUM_LEVELS)]

    @torch.no_grad()
    def place_cache(self) -> list[torch.Tensor]:
        """Places' tangents, computed once in eval mode and kept until train() or reload."""
        if self._cache is None:
            was = self.training
            self.eval()
            self._cache = [t.detach() for t in self.encode_places()]  # tangent anchors are the parameters themselves
            self.train(was)
        return self._cache

    def place_points(self, tangents: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        tangents = tangents if tangents is not None else self.place_cache()
        geom = self.geometry
        with torch.autocast(device_type=tangents[0].device.type, enabled=False):
            return [geom.to_point(t.float()) for t in tangents]

    def train(self, mode: bool = True):
        if mode:
            self._cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._cache = None  # device or dtype moves invalidate the cache
        return super()._apply(fn, recurse)

    # ---- photos ----------------------------------------------------------------------
    def photo_tangent(self, feats: torch.Tensor, place_tangents: list[torch.Tensor] | None = None,
                      return_attention: bool = False, exclude: torch.Tensor | None = None):
        """feats (B, F) -> (B, D), attention included; with return_attention (support
        head), (v, (support indices (B, k), weights (B, k)))."""
        v = self.log_alpha_img.exp() * self.photo_mlp(feats.float())  # (B, D)
        if self.config.photo_head == "support":
            if place_tangents is None:  # training: the places' current tangents (gradients reach them)
                place_tangents = self.encode_places() if self.training else self.place_cache()
            idx, a = self.support_attention(feats, exclude=exclude)
            for lv in range(NUM_LEVELS):
                anc = getattr(self, f"support_ancestor_{lv}")[idx]  # (B, k)
                if idx.shape[1] == self.config.support_points:  # all attended: the attention's mass on each place
                    mass = torch.zeros(a.shape[0], place_tangents[lv].shape[0], dtype=a.dtype, device=a.device)
                    ctx = mass.scatter_add(1, anc, a) @ place_tangents[lv]
                else:  # many places: the attended points' own
                    ctx = torch.einsum("bk,bkd->bd", a, place_tangents[lv][anc])  # (B, k, D) gathered
                v = v + self.level_mix[lv] * ctx
            return (v, (idx, a)) if return_attention else v
        if self.config.attention:
            keys = place_tangents if place_tangents is not None else self.place_cache()
            ctx = torch.cat([attn(v, k) for attn, k in zip(self.attn, keys)], dim=-1)  # (B, 4D)
            v = v + self.fuse(ctx)
        return v

    def forward(self, feats: torch.Tensor, place_tangents: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Photo points: feats (B, F) -> (B, p). Pass place_tangents from encode_places()
        when training so that gradients reach the places through attention."""
        return self._point(self.photo_tangent(feats, place_tangents))  # MLPs may run under autocast

    def located(self, feats: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple | None]:
        """Photo points and, for the support head, the attention they were made with (what
        attended_gps reads): feats (B, F) -> (z (B, p), (indices (B, k), weights (B, k)) or None)."""
        if self.config.photo_head != "support":
            return self(feats), None
        v, att = self.photo_tangent(feats, return_attention=True, exclude=exclude)
        return self._point(v), att

    def _point(self, v: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=v.device.type, enabled=False):
            return self.geometry.to_point(v.float())  # manifold math in float32

    def loss(self, z: torch.Tensor, place_points: list[torch.Tensor], targets: torch.Tensor,
             photo_latlon: torch.Tensor, place_latlon: list[torch.Tensor] | None = None,
             neg_log_weights: list[torch.Tensor | None] | None = None):
        """GWH-InfoNCE over all levels: z (B, p), targets (B, 4) local indices (-1: skip).
        With sampled negatives, place_points, place_latlon and neg_log_weights hold a
        level's sample (see GeoWeightedLoss) and targets index into it."""
        place_latlon = place_latlon or [self.place_latlon(lv) for lv in range(NUM_LEVELS)]
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.criterion(self.geometry, z.float(), [p.float() for p in place_points], targets,
                                  photo_latlon.float(), place_latlon, neg_log_weights)

    # ---- bookkeeping -----------------------------------------------------------------
    @torch.no_grad()
    def folded(self) -> "HierLoc":
        """The same model for answering photos, with the place encoder folded into the
        anchors: each anchor becomes the place's final point (exp_0 of its tangent), and
        the per-place input features (hundreds of MB for 165k places) are no longer
        needed. Eval-mode outputs are the same up to float rounding; it cannot be
        trained further as the paper's model (its places no longer see their features)."""
        from dataclasses import replace

        c = self.config
        if c.learn_curvature:
            raise ValueError("folding a model with a learned curvature is not supported")
        cfg = replace(c, place_features=(), dropout=0.0,
                      extra={**c.extra, "folded_place_features": [n for n, _ in c.place_features]})
        new = HierLoc(cfg, [self.place_latlon(lv).cpu() for lv in range(NUM_LEVELS)], support=self.support_inputs())
        tangents = [t.cpu() for t in self.place_cache()]
        mine = dict(self.named_parameters())
        for name, p in new.named_parameters():
            if name.startswith("anchor_"):
                t = tangents[int(name.split("_")[1])]
                p.copy_(L.exp0(t, c.curvature) if new.manifold_anchors else t)
            else:
                p.copy_(mine[name].detach().cpu())
        if self.remembers_your_photos:
            new.attach_your_photos(self.your_memory, c.extra["your_photos"])
        return new.eval()

    def support_inputs(self) -> dict | None:
        """The support points this model attends over (the ``support`` argument), or None."""
        if self.config.photo_head != "support":
            return None
        out = {"unit": self.support_unit.cpu(), "hash": self.support_hash,
                "log_population": self.support_log_population.cpu(), "kind": self.support_kind.cpu(),
                "ancestors": [getattr(self, f"support_ancestor_{lv}").cpu() for lv in range(NUM_LEVELS)]}
        if hasattr(self, "support_latlon"):
            out["latlon"] = self.support_latlon.cpu()
        return out

    def place_feature_tensors(self) -> dict[str, torch.Tensor]:
        """The fixed place inputs, for saving next to the weights."""
        return {f"feat_{n}_{lv}": getattr(self, f"feat_{n}_{lv}") for n in self.feature_names
                for lv in range(NUM_LEVELS)}


def level_latlon(table) -> list[np.ndarray]:
    """Per level (N_l, 2) centroids of a PlaceTable, in the table's level order."""
    out = []
    for lv in range(NUM_LEVELS):
        sl = table.level_slice(lv)
        out.append(np.stack([table.lat_deg[sl], table.lon_deg[sl]], axis=1).astype(np.float32))
    return out
