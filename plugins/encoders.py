"""Built-in encoders (analysis transforms): image (B, 3, H, W) in [0, 1] -> latent.

Every encoder has the attributes ``stride`` (total downsampling factor; H and W
must be divisible by it) and ``out_channels`` (latent channels k).

The helpers here (option checks, norm and activation factories) are shared
with :mod:`rdkit_ae.plugins.decoders`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn
from torch import Tensor

from rdkit_ae.errors import PluginError
from rdkit_ae.plugin.checks import check_choice, check_int
from rdkit_ae.plugins.linear_paths import INITS, LinearAnalysis, unshuffle
from rdkit_ae.registry import register

NORMS = ("batch", "group", "instance", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu")
SHORTCUTS = ("none", "linear")
# Stride 2**stages: inputs are padded to a multiple of it, so 40 stages would pad
# a 32x32 image to 2**40 pixels a side. 8 (stride 256) is well past published models.
MAX_STAGES = 8


# -- shared option helpers ----------------------------------------------------
def check_channels(plugin: str, channels: object) -> tuple[int, ...]:
    """A non-empty sequence of at most MAX_STAGES positive ints (a TOML list or a tuple): one per stride-2 stage."""
    if isinstance(channels, (int, str)) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise PluginError(
            f"{plugin}: channels must be a non-empty list of positive integers, e.g. [32, 64, 128]; got {channels!r}"
        )
    if len(channels) > MAX_STAGES:
        raise PluginError(
            f"{plugin}: channels has {len(channels)} entries (stride-2 stages); at most {MAX_STAGES} are allowed"
        )
    return tuple(check_int(plugin, "channels", c) for c in channels)


def check_stages(plugin: str, param: str, value: object) -> int:
    """A count of stride-2 stages in 1..MAX_STAGES."""
    return check_int(plugin, param, value, 1, MAX_STAGES)


def check_shortcut(plugin: str, shortcut: object, shortcut_init: object) -> bool:
    """True for ``shortcut = "linear"``; both values checked with one-line errors."""
    check_choice(plugin, "shortcut_init", shortcut_init, INITS)
    return check_choice(plugin, "shortcut", shortcut, SHORTCUTS) == "linear"


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        # Up to 8 groups, always a divisor of the channel count.
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def make_activation(activation: str) -> nn.Module:
    if activation == "relu":
        return nn.ReLU(inplace=True)
    if activation == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if activation == "gelu":
        return nn.GELU()
    if activation == "silu":
        return nn.SiLU()
    return nn.ELU(inplace=True)


# -- encoders -----------------------------------------------------------------
@register("encoder", "conv")
class ConvEncoder(nn.Module):
    """Seed conv autoencoder encoder: 3x3 stride-2 conv/norm/act blocks, then a 1x1 conv to the latent.

    For each ``c`` in ``channels``: ``Conv2d(3x3, stride 2, padding 1) -> norm
    -> activation``; then a 1x1 convolution to ``latent_channels``. The latent
    is linear (no norm or activation after the last conv).

    ``stride = 2 ** len(channels)``: a 32x32 image gives a 4x4x16 latent with
    the defaults.

    Args:
        channels: widths of the stride-2 blocks (default ``(32, 64, 128)``).
        latent_channels: latent channels k (default 16).
        norm: ``"batch"`` (default), ``"group"``, ``"instance"`` or ``"none"``.
        activation: ``"relu"`` (default), ``"leaky_relu"``, ``"gelu"``,
            ``"silu"`` or ``"elu"``.
        shortcut: ``"none"`` (default) or ``"linear"``: add a linear path
            ``PixelUnshuffle(stride) -> 1x1 conv`` to the latent beside the
            convolutions (AuxT-style; see encoder ``block``).
        shortcut_init: the linear path's start: ``"pca"`` (default),
            ``"haar"`` or ``"random"``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        latent_channels: int = 16,
        norm: str = "batch",
        activation: str = "relu",
        shortcut: str = "none",
        shortcut_init: str = "pca",
    ):
        super().__init__()
        name = "encoder 'conv'"
        channels = check_channels(name, channels)
        latent_channels = check_int(name, "latent_channels", latent_channels)
        check_choice(name, "norm", norm, NORMS)
        check_choice(name, "activation", activation, ACTIVATIONS)
        linear = check_shortcut(name, shortcut, shortcut_init)

        layers: list[nn.Module] = []
        in_ch = 3
        for c in channels:
            layers += [
                nn.Conv2d(in_ch, c, kernel_size=3, stride=2, padding=1),
                make_norm(norm, c),
                make_activation(activation),
            ]
            in_ch = c
        layers.append(nn.Conv2d(in_ch, latent_channels, kernel_size=1))
        self.net = nn.Sequential(*layers)
        self.channels = channels
        self.stride = 2 ** len(channels)
        self.out_channels = latent_channels
        # None adds no state-dict keys: models without the shortcut keep theirs
        self.shortcut = LinearAnalysis(self.stride, latent_channels, shortcut_init) if linear else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        return y if self.shortcut is None else y + self.shortcut(unshuffle(x, self.stride))


@register("encoder", "gdn")
class GDNEncoder(nn.Module):
    """Balle et al. (2018) analysis transform: 5x5 stride-2 convs with GDN between them.

    ``stages`` convolutions (default 4, as in the paper): the first
    ``stages - 1`` output ``N`` channels, each followed by GDN; the last one
    outputs ``M`` latent channels. ``stride = 2 ** stages``.

    Reference: J. Balle, D. Minnen, S. Singh, S. J. Hwang, N. Johnston,
    "Variational image compression with a scale hyperprior", ICLR 2018.

    Args:
        N: hidden channels (default 128).
        M: latent channels (default 192).
        stages: number of stride-2 convolutions, 1..8 (default 4).
        shortcut: ``"none"`` (default) or ``"linear"`` (as encoder ``conv``).
        shortcut_init: ``"pca"`` (default), ``"haar"`` or ``"random"``.
    """

    def __init__(self, N: int = 128, M: int = 192, stages: int = 4, shortcut: str = "none", shortcut_init: str = "pca"):
        super().__init__()
        from compressai.layers import GDN
        from compressai.models.utils import conv

        name = "encoder 'gdn'"
        N = check_int(name, "N", N)
        M = check_int(name, "M", M)
        stages = check_stages(name, "stages", stages)
        linear = check_shortcut(name, shortcut, shortcut_init)

        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(stages - 1):
            layers += [conv(in_ch, N), GDN(N)]
            in_ch = N
        layers.append(conv(in_ch, M))
        self.net = nn.Sequential(*layers)
        self.N, self.M = N, M
        self.stride = 2**stages
        self.out_channels = M
        self.shortcut = LinearAnalysis(self.stride, M, shortcut_init) if linear else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        return y if self.shortcut is None else y + self.shortcut(unshuffle(x, self.stride))


__all__ = [
    "ConvEncoder",
    "GDNEncoder",
    "NORMS",
    "ACTIVATIONS",
    "MAX_STAGES",
    "SHORTCUTS",
    "check_choice",
    "check_int",
    "check_shortcut",
    "check_stages",
]
