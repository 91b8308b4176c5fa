"""Perceptual losses: ``haarpsi`` (1 - HaarPSI), ``ms-gmsd`` (MS-GMSD) and ``lpips`` (LPIPS distance).

HaarPSI and MS-GMSD are piq's differentiable implementations (the same code
``rdkit eval --metrics`` reports), weight-free and cheap; ``lpips`` needs
ImageNet backbone weights on this machine (``weights=`` a file, or
RDKIT_LPIPS_BACKBONE, or torch's hub cache; see
rdkit_ae/evaluation/learned_metrics.py) and is refused in one line without
them. Reconstructions are clamped to [0, 1] first (piq checks its input
range), so pixels outside it get no gradient from these terms. All are 0 for
a perfect reconstruction and lower is better, so a recipe adds them with a
positive weight.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn
from torch import Tensor

from rdkit_ae.errors import RdkitError
from rdkit_ae.plugin import register_loss


class ImageSizeError(RdkitError, ValueError):
    """Images too small for a perceptual loss."""


def _check_size(plugin: str, x: Tensor, min_side: int) -> None:
    H, W = x.shape[-2:]
    if min(H, W) < min_side:
        raise ImageSizeError(f"loss '{plugin}': needs images of at least {min_side}x{min_side} pixels, got {H}x{W}")


@register_loss("haarpsi")
class HaarPSILoss(nn.Module):
    """1 - HaarPSI (piq, data range 1); images of at least 16x16."""

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        import piq

        _check_size("haarpsi", x, 16)
        return 1.0 - piq.haarpsi(out["x_hat"].clamp(0.0, 1.0), x, data_range=1.0, reduction="mean")


@register_loss("ms-gmsd")
class MSGMSDLoss(nn.Module):
    """MS-GMSD (piq, data range 1; 0 for a perfect reconstruction); images of at least 17x17."""

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        import piq

        _check_size("ms-gmsd", x, 17)
        return piq.multi_scale_gmsd(out["x_hat"].clamp(0.0, 1.0), x, data_range=1.0, reduction="mean")


@register_loss("lpips")
class LPIPSLoss(nn.Module):
    """LPIPS distance (the lpips package's heads on an ImageNet AlexNet / VGG-16 backbone); images of at least
    32x32.

    Args:
        weights: torchvision AlexNet or VGG-16 ImageNet weights (default: RDKIT_LPIPS_BACKBONE, then torch's
            hub cache); checked when the loss is built.
    """

    def __init__(self, weights: str | None = None):
        super().__init__()
        from rdkit_ae.evaluation.learned_metrics import load_lpips

        if weights is not None and not isinstance(weights, str):
            raise RdkitError(f"loss 'lpips': weights must be a file path, got {weights!r}")
        # held outside the module tree: the frozen network is not part of a checkpoint's weights
        self._net = [load_lpips(weights)]

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        _check_size("lpips", x, 32)
        net = self._net[0]
        if next(net.parameters()).device != x.device:
            net.to(x.device)
        return net(out["x_hat"].clamp(0.0, 1.0), x, normalize=True).mean()
