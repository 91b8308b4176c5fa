"""Helpers shared by the built-in plugin tests (encoders, quantizers, losses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from compressai.models import CompressionModel
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_CANDIDATES = (REPO.parent / "shared", Path("/work/shared"))


def shared_file(relpath: str) -> Path | None:
    """A file under ../shared (relative to the repository), or None when absent."""
    for root in SHARED_CANDIDATES:
        p = root / relpath
        if p.is_file():
            return p
    return None


def cifar_images(n: int, start: int = 0) -> torch.Tensor | None:
    """n real CIFAR-10 images (n, 3, 32, 32) in [0, 1] from ../shared, or None when absent."""
    p = shared_file("data/cifar10-lossless/dev.npz")
    if p is None:
        return None
    with np.load(p) as data:
        x = data["x"][start : start + n]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0


def random_vgg_state(depth: int = 15, prefix: str = "features.", seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised ``vgg16().features[: depth + 1]`` state dict (torchvision layout)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    features = make_layers(cfgs["D"])[: depth + 1]
    return {f"{prefix}{k}": v.clone() for k, v in features.state_dict().items()}


def save_vgg_weights(path: Path, depth: int = 15, prefix: str = "features.", classifier: bool = False) -> Path:
    state = random_vgg_state(depth, prefix)
    if classifier:
        state["classifier.0.weight"] = torch.zeros(4, 8)
        state["classifier.0.bias"] = torch.zeros(4)
    torch.save(state, path)
    return path


class CodecWrapper(CompressionModel):
    """The smallest CompressionModel around a quantizer: gives it update() and aux_loss()."""

    def __init__(self, codec: nn.Module):
        super().__init__()
        self.latent_codec = codec

    def forward(self, y):
        return self.latent_codec(y)
