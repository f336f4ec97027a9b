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


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/hierloc"                 # run folder: checkpoints, logs, config
    data: str = "synthetic"                   # synthetic | osv5m
    # GeoSynth (data = synthetic)
    synth: dict = field(default_factory=dict)  # GeoSynthConfig fields, e.g. {"n_photos": 40000}
    # OSV-5M (data = osv5m): a local copy and a feature cache made by `features extract`
    osv5m_root: str = ""
    features: str = ""                        # feature cache folder of the train split
    limit: int = 0
    countries: tuple = ()
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
        if self.data not in ("synthetic", "osv5m"):
            raise ValueError(f"data must be synthetic or osv5m, got {self.data!r}")
        if self.data == "osv5m" and not (self.osv5m_root and self.features):
            raise ValueError("data=osv5m needs osv5m_root and features (run `features extract` first)")
        if self.batch_size < 1 or self.lr <= 0 or self.epochs <= 0:
            raise ValueError("batch_size, lr and epochs must be positive")
        from hierloc.model.config import PLACE_FEATURES

        bad = [f for f in self.place_features if f not in PLACE_FEATURES]
        if bad:
            raise ValueError(f"unknown place features {bad}; expected some of {PLACE_FEATURES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        from hierloc.model.config import from_known_fields

        return from_known_fields(cls, d, "training config")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> "TrainConfig":
        d: dict = {}
        if path:
            p = Path(path)
            if not p.exists():
                raise FileNotFoundError(f"config file {p} does not exist")
            d = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set needs key=value, got {item!r}")
            key, value = item.split("=", 1)
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            if "." in key:  # synth.n_photos=1000
                outer, inner = key.split(".", 1)
                d.setdefault(outer, {})[inner] = parsed
            else:
                d[key] = parsed
        return cls.from_dict(d)
