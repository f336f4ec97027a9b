"""TrainConfig: one frozen, validated dataclass for a training run, saved with the run.

Read from a JSON or TOML file (`--config FILE`), overridden by `--set key=value`
(values are parsed as JSON where possible: 3, 0.5, true, [1, 2], "text").
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


GEOCLIP_DEFAULTS = {
    "data": "geoclip", "out": "runs/geoclip", "locations": "gallery", "place_features": ["location", "image"],
    "embed_dim": 64, "hidden_dim": 128, "dropout": 0.0, "attention": False, "max_negatives": 1024,
    "batch_size": 256, "lr": 0.01, "manifold_lr": 0.03, "max_anchor_norm": 4.0, "init": "pca",
    "minutes": 40.0, "epochs": 100.0, "val_photos": 500, "log_every": 50, "ckpt_every": 100,
    "backbone": "geoclip", "backbone_tag": "CLIP ViT-L/14 (OpenAI) + GeoCLIP image head, unit 512-d",
}
"""What `train --geoclip` sets before any --config/--set: the settings the shipped GeoCLIP-space
checkpoint was trained with (a CPU budget: no cross-level attention, sampled city negatives)."""


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/hierloc"                 # run folder: checkpoints, logs, config
    data: str = "synthetic"                   # synthetic | osv5m | geoclip
    # GeoSynth (data = synthetic)
    synth: dict = field(default_factory=dict)  # GeoSynthConfig fields, e.g. {"n_photos": 40000}
    # OSV-5M (data = osv5m): a local copy and a feature cache made by `features extract`
    osv5m_root: str = ""
    features: str = ""                        # feature cache folder of the train split
    limit: int = 0
    countries: tuple = ()
    # GeoCLIP space (data = geoclip): pseudo-photos from GeoCLIP's location encoder
    locations: str = "cities"                 # where photos are taken: cities | gallery
    noise_max: float = 1.5                    # photos' noise levels drawn in [0, noise_max] x calibrated
    place_feature_photos: int = 200_000       # locations averaged into the mean-photo place feature
    backbone: str = "efficientnet-lite0"
    backbone_tag: str = ""
    # model (see ModelConfig)
    embed_dim: int = 128
    hidden_dim: int = 256
    dropout: float = 0.3
    geometry: str = "lorentz"
    attention: bool = True
    curvature: float = 1.0
    learn_curvature: bool = False
    place_features: tuple = ("image", "location")  # any of image, text, location
    kernel: str = "laplace"
    tau_init: float = 0.5
    lambda_init: float = 1.0
    sigma_init_km: float = 250.0
    betas: tuple = (1.0, 1.0, 1.0, 1.0)
    max_anchor_norm: float = 0.0              # 0: none; else anchors are kept within this distance of the origin
    init: str = "random"                      # random | pca | pca-origin (see train.loop.pca_init)
    max_negatives: int = 0                    # 0: every place of a level is a negative (the paper);
                                              # else levels larger than this are sampled per step
    # optimisation
    batch_size: int = 512
    lr: float = 3e-3
    manifold_lr: float = 3e-3
    weight_decay: float = 0.05
    epochs: float = 8.0
    max_steps: int = 0                        # 0: from epochs
    minutes: float = 0.0                      # wall-clock budget (0: none)
    grad_clip: float = 1.0
    ckpt_every: int = 200
    log_every: int = 25
    val_photos: int = 2000                    # validation subset evaluated at each log
    seed: int = 0
    device: str = "auto"                      # auto | cpu | cuda
    amp: bool = True                          # bf16 autocast on GPU (manifold math stays float32)
    push_to_hub: str = ""                     # repo id to upload the final checkpoint to

    def __post_init__(self):
        for name in ("countries", "place_features", "betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.data not in ("synthetic", "osv5m", "geoclip"):
            raise ValueError(f"data must be synthetic, osv5m or geoclip, got {self.data!r} "
                             f"(your own photos: `train --images DIR`, train.own_model)")
        if self.locations not in ("cities", "gallery"):
            raise ValueError(f"locations must be cities or gallery, got {self.locations!r}")
        if self.data == "osv5m" and not (self.osv5m_root and self.features):
            raise ValueError("data=osv5m needs osv5m_root and features (run `features extract` first)")
        if self.init not in ("random", "pca", "pca-origin"):
            raise ValueError(f"init must be random, pca or pca-origin, got {self.init!r}")
        if self.max_negatives < 0:
            raise ValueError("max_negatives must be 0 (all places) or positive")
        if self.batch_size < 1 or self.lr <= 0 or self.epochs <= 0:
            raise ValueError("batch_size, lr and epochs must be positive")
        from hierloc.model.config import PLACE_FEATURES

        bad = [f for f in self.place_features if f not in PLACE_FEATURES]
        if bad:
            raise ValueError(f"unknown place features {bad}; expected some of {PLACE_FEATURES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def command(self) -> str:
        """The command line that makes this run again (settings that differ from what the
        command sets by itself are given with --set)."""
        import shlex

        geoclip = self.data == "geoclip"
        base = {**dataclasses.asdict(TrainConfig()), **(GEOCLIP_DEFAULTS if geoclip else {})}
        parts = ["python", "-m", "hierloc", "train"] + (["--geoclip"] if geoclip else [])
        parts += ["--out", self.out]
        for key, value in self.to_dict().items():
            if key == "out":
                continue
            want = list(value) if isinstance(value, tuple) else value
            have = base.get(key)
            have = list(have) if isinstance(have, tuple) else have
            if want != have:
                parts += ["--set", f"{key}={json.dumps(want) if not isinstance(want, str) else want}"]
        return shlex.join(parts)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        from hierloc.model.config import from_known_fields

        return from_known_fields(cls, d, "training config")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> "TrainConfig":
        d: dict = dict(base or {})
        if path:
            p = Path(path)
            if not p.exists():
                raise FileNotFoundError(f"config file {p} does not exist")
            d.update(tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text()))
        for key, parsed in parse_overrides(overrides).items():
            if "." in key:  # synth.n_photos=1000
                outer, inner = key.split(".", 1)
                d.setdefault(outer, {})[inner] = parsed
            else:
                d[key] = parsed
        return cls.from_dict(d)


def parse_overrides(items) -> dict:
    """`--set key=value` items -> {key: value}, values parsed as JSON where possible."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set needs key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
