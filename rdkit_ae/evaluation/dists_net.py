"""The DISTS network: VGG-16 with L2 pooling, and the texture/structure comparison (definition in :mod:`.dists`).

Loading (backbone file, calibrated weights) is :mod:`.dists`'s job; this
module is only the arithmetic, on images scaled to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (3, 64, 128, 256, 512, 512)  # stage 0 is the image itself
# VGG-16 ``features`` indices of the convolutions of stages 1..5
STAGE_CONVS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
C1 = C2 = 1e-6  # the paper's constants of the texture and structure terms
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, which its VGG-16 was trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
SQRT_EPS = 1e-12  # keeps the L2 pool's square root differentiable where a channel is all zero


def hanning_filter(channels: int) -> torch.Tensor:
    """The 3x3 Hanning window (the outer product of [1/4, 1/2, 1/4]) as a depthwise filter bank."""
    a = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    g = torch.outer(a, a)
    g = (g / g.sum()).to(torch.float32)
    return g.expand(channels, 1, 3, 3).contiguous()


class DistsNet(nn.Module):
    """``net(x, y)`` -> DISTS per image of two (N, 3, H, W) batches in [0, 1] (0: identical). Frozen: the
    backbone and weights are buffers, so the network adds nothing to a model's parameters."""

    mean: torch.Tensor
    std: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(self, convs: Sequence[tuple[torch.Tensor, torch.Tensor]], alpha: torch.Tensor, beta: torch.Tensor):
        super().__init__()
        self.n_convs = [len(c) for c in STAGE_CONVS]
        for i, (w, b) in enumerate(convs):
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", b)
        for c in CHANNELS[1:-1]:  # an L2 pool before stages 2..5
            self.register_buffer(f"pool{c}", hanning_filter(c))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("alpha", alpha.reshape(-1).float())
        self.register_buffer("beta", beta.reshape(-1).float())

    def l2_pool(self, h: torch.Tensor) -> torch.Tensor:
        g = getattr(self, f"pool{h.shape[1]}")
        return (F.conv2d(h * h, g, stride=2, padding=1, groups=h.shape[1]) + SQRT_EPS).sqrt()

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six representations: the image, then relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
        out = [x]
        h = (x - self.mean) / self.std
        conv = 0
        for stage, n in enumerate(self.n_convs):
            if stage:
                h = self.l2_pool(h)
            for _ in range(n):
                h = F.relu(F.conv2d(h, getattr(self, f"w{conv}"), getattr(self, f"b{conv}"), padding=1))
                conv += 1
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        texture = torch.zeros(x.shape[0], device=x.device)
        structure = torch.zeros(x.shape[0], device=x.device)
        alphas = torch.split(self.alpha, list(CHANNELS))
        betas = torch.split(self.beta, list(CHANNELS))
        for fx, fy, alpha, beta in zip(self.stages(x), self.stages(y), alphas, betas):
            mx, my = fx.mean((2, 3)), fy.mean((2, 3))  # (N, C): global statistics per channel
            vx = ((fx - mx[..., None, None]) ** 2).mean((2, 3))
            vy = ((fy - my[..., None, None]) ** 2).mean((2, 3))
            cov = (fx * fy).mean((2, 3)) - mx * my
            texture = texture + ((2 * mx * my + C1) / (mx**2 + my**2 + C1)) @ alpha
            structure = structure + ((2 * cov + C2) / (vx + vy + C2)) @ beta
        return 1.0 - texture - structure
