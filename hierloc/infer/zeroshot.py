"""The training-free profile: GeoCLIP's published encoders placed in the Lorentz model.

Photo: CLIP ViT-L/14 (OpenAI weights, through transformers exactly as GeoCLIP loads
them, same CLIPImageProcessor) -> CLIP image projection (768) -> GeoCLIP's image MLP
(768 -> 768 -> 512, weights in the geoclip wheel) -> unit vector u.
Place: GeoCLIP's location encoder (weights in the geoclip wheel) applied to the place's
centroid -> unit vector w. GeoCLIP scores a pair by the cosine s = u . w.

Embedding: the photo goes to z = exp_0(rho u), every place of level l to
h = exp_0(r_l w), with fixed radii (rho, r_l > 0) that grow with the level.

Claim: within a level, ranking places by geodesic distance to z is ranking them by
GeoCLIP similarity (nearest = most similar).
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
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hierloc.manifold import lorentz as L

log = logging.getLogger(__name__)

CLIP_REPO = "openai/clip-vit-large-patch14"
PHOTO_RADIUS = 3.5
LEVEL_RADII = (1.0, 2.0, 3.0, 4.0)


class ZeroShotUnavailable(RuntimeError):
    """CLIP ViT-L/14 weights missing and no network; the message says what to do."""


def geoclip_weights_dir() -> Path:
    import geoclip

    return Path(geoclip.__file__).parent / "model" / "weights"


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


def load_image_path(device="cpu", random_weights: bool = False) -> GeoCLIPImagePath:
    """The zero-shot photo encoder. random_weights builds the architecture only (tests, benchmarks)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if random_weights:
        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, patch_size=14, projection_dim=768)
        vision, processor = CLIPVisionModelWithProjection(cfg), CLIPImageProcessor()
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


def photo_points(u: torch.Tensor, K: float = 1.0) -> torch.Tensor:
    """(B, 512) GeoCLIP photo features -> (B, 513) Lorentz points at radius PHOTO_RADIUS."""
    u = nn.functional.normalize(u if u.dtype == torch.float64 else u.float(), dim=-1)
    return L.exp0(PHOTO_RADIUS * u, K)


def place_points(location_feats: list[torch.Tensor], K: float = 1.0) -> list[torch.Tensor]:
    """Per level (N_l, 512) GeoCLIP location features -> (N_l, 513) points at radius r_l."""
    return [L.exp0(r * nn.functional.normalize(f if f.dtype == torch.float64 else f.float(), dim=-1), K)
            for r, f in zip(LEVEL_RADII, location_feats)]


def geoclip_logit_scale() -> float:
    """GeoCLIP's learned temperature (exp of the stored log scale)."""
    t = torch.load(geoclip_weights_dir() / "logit_scale_weights.pth", map_location="cpu", weights_only=True)
    return float(np.exp(float(t)))
