"""ModelConfig: every constructor argument of HierLoc, frozen and validated on creation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from hierloc.losses import KERNELS
from hierloc.model.geometry import GEOMETRIES

PLACE_FEATURES = ("image", "text", "location")
CURVATURE_CONVENTION = "lorentz: <x,x>_L = -K, curvature -1/K, time first; geoopt.Lorentz(k=K)"


def from_known_fields(cls, d: dict, what: str):
    """cls(**d), refusing keys that are not fields of the dataclass (named in the error)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what} has fields this HierLoc does not know: {unknown}; known: {sorted(names)}")
    return cls(**d)


@dataclass(frozen=True)
class ModelConfig:
    feat_dim: int                      # backbone feature size (photo input)
    num_places: tuple                  # places per level: (countries, regions, sub-regions, cities)
    embed_dim: int = 128               # hyperbolic dimension d (points are d+1 vectors)
    hidden_dim: int = 512              # MLP width of the photo head and place encoder
    dropout: float = 0.1
    geometry: str = "lorentz"          # lorentz | euclidean (ablation)
    attention: bool = True             # cross-level attention fusion on|off (ablation)
    photo_head: str = "mlp"            # mlp: the paper's image branch; support: attention over support points (model.support)
    support_points: int = 0            # S, the support points' count (photo_head "support")
    support_topk: int = 256            # support points attended per photo (the largest logits)
    support_temperature: float = 150.0  # initial T of the support logits T cos + bias
    attn_heads: int = 8
    curvature: float = 1.0             # K: curvature is -1/K
    learn_curvature: bool = False
    curvature_range: tuple = (0.1, 10.0)   # clamp for a learned K
    place_features: tuple = ()         # ((name, dim), ...) with name in image|text|location
    anchor_norms: tuple = (0.5, 1.0, 1.5, 2.0)  # initial distance from the origin per level
    anchor_space: str = "manifold"     # manifold: Lorentz points (RiemannianAdam); tangent: tangent vectors at the origin (AdamW)
    kernel: str = "laplace"            # geo-weighting kernel: laplace | gaussian | none
    tau_init: float = 0.5
    lambda_init: float = 1.0           # 0 turns geo-weighting off (ablation)
    sigma_init_km: float = 250.0
    betas: tuple = (1.0, 1.0, 1.0, 1.0)
    loss_chunk: int = 16384            # negatives per loss chunk (memory bound)
    backbone: str = ""                 # registry name of the frozen backbone
    backbone_tag: str = ""             # its pretrained weights tag
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes saved with the model

    def __post_init__(self):
        object.__setattr__(self, "num_places", tuple(int(n) for n in self.num_places))
        object.__setattr__(self, "place_features",
                           tuple((str(n), int(d)) for n, d in self.place_features))
        for name in ("curvature_range", "anchor_norms", "betas"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.num_places) != 4 or min(self.num_places) < 1:
            raise ValueError(f"num_places must be 4 positive counts, got {self.num_places}")
        if self.feat_dim < 1 or self.embed_dim < 2 or self.hidden_dim < 1:
            raise ValueError("feat_dim, embed_dim and hidden_dim must be positive")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.anchor_space not in ("manifold", "tangent"):
            raise ValueError(f"anchor_space must be manifold or tangent, got {self.anchor_space!r}")
        if self.photo_head not in ("mlp", "support"):
            raise ValueError(f"photo_head must be mlp or support, got {self.photo_head!r}")
        if self.photo_head == "support" and (self.support_points < 1 or self.support_topk < 1):
            raise ValueError("a support photo head needs support_points and support_topk >= 1")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.embed_dim % self.attn_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by attn_heads {self.attn_heads}")
        lo, hi = self.curvature_range
        if not (0 < lo <= self.curvature <= hi):
            raise ValueError(f"curvature {self.curvature} must lie in {self.curvature_range}")
        for name, _ in self.place_features:
            if name not in PLACE_FEATURES:
                raise ValueError(f"unknown place feature {name!r}; expected {PLACE_FEATURES}")
        if len(self.betas) != 4 or len(self.anchor_norms) != 4:
            raise ValueError("betas and anchor_norms need one value per level")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return from_known_fields(cls, d, "model config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
