"""Built-in decoders (synthesis transforms): latent (B, k, h, w) -> image (B, 3, H, W).

Every decoder has the attribute ``in_channels`` (latent channels k). A decoder
uses the same parameter names as its encoder, because the model builder passes
it every encoder parameter of the same name that the recipe did not set.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

from rdkit_ae.plugins.encoders import (
    ACTIVATIONS,
    NORMS,
    check_channels,
    check_choice,
    check_int,
    check_shortcut,
    check_stages,
    make_activation,
    make_norm,
)
from rdkit_ae.plugins.linear_paths import LinearSynthesis, shuffle
from rdkit_ae.registry import register

UPSAMPLES = ("transpose", "nearest", "bilinear")
OUTPUTS = ("sigmoid", "clamp", "none")


def _upsample(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    if kind == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1)
    align = False if kind == "bilinear" else None
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=kind, align_corners=align),
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
    )


def _output(kind: str) -> nn.Module:
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "clamp":
        return nn.Hardtanh(0.0, 1.0)
    return nn.Identity()


@register("decoder", "conv")
class ConvDecoder(nn.Module):
    """Seed conv autoencoder decoder: 1x1 conv, then x2 upsampling blocks back to an RGB image in [0, 1].

    Mirrors encoder ``conv``: a 1x1 conv from ``latent_channels`` to
    ``channels[-1]``, then one x2 upsampling step per entry of ``channels``
    through the reversed channel list, the last one ending at 3 channels.
    Norm and activation follow every layer except the last; the output is
    bounded by ``output``.

    Args:
        channels: same as the encoder's (default ``(32, 64, 128)``).
        latent_channels: latent channels k (default 16).
        norm: ``"batch"`` (default), ``"group"``, ``"instance"`` or ``"none"``.
        activation: ``"relu"`` (default), ``"leaky_relu"``, ``"gelu"``,
            ``"silu"`` or ``"elu"``.
        upsample: ``"transpose"`` (3x3 stride-2 transposed conv, default),
            ``"nearest"`` or ``"bilinear"`` (x2 upsampling then a 3x3 conv).
        output: ``"sigmoid"`` (default), ``"clamp"`` (hardtanh to [0, 1]) or
            ``"none"`` (unbounded).
        shortcut: ``"none"`` (default) or ``"linear"``: add a linear path
            ``1x1 conv -> PixelShuffle(stride)`` (the encoder's, transposed)
            to the output before its bound (with ``"sigmoid"``: to the logits).
        shortcut_init: ``"pca"`` (default), ``"haar"`` or ``"random"``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        latent_channels: int = 16,
        norm: str = "batch",
        activation: str = "relu",
        upsample: str = "transpose",
        output: str = "sigmoid",
        shortcut: str = "none",
        shortcut_init: str = "pca",
    ):
        super().__init__()
        name = "decoder 'conv'"
        channels = check_channels(name, channels)
        latent_channels = check_int(name, "latent_channels", latent_channels)
        check_choice(name, "norm", norm, NORMS)
        check_choice(name, "activation", activation, ACTIVATIONS)
        check_choice(name, "upsample", upsample, UPSAMPLES)
        check_choice(name, "output", output, OUTPUTS)
        linear = check_shortcut(name, shortcut, shortcut_init)

        rev = list(reversed(channels))
        layers: list[nn.Module] = [
            nn.Conv2d(latent_channels, rev[0], kernel_size=1),
            make_norm(norm, rev[0]),
            make_activation(activation),
        ]
        outs = rev[1:] + [3]
        for i, (cin, cout) in enumerate(zip(rev, outs)):
            layers.append(_upsample(upsample, cin, cout))
            if i < len(outs) - 1:
                layers += [make_norm(norm, cout), make_activation(activation)]
        layers.append(_output(output))
        self.net = nn.Sequential(*layers)
        self.channels = channels
        self.stride = 2 ** len(channels)
        self.in_channels = latent_channels
        self.shortcut = LinearSynthesis(self.stride, latent_channels, shortcut_init) if linear else None

    def forward(self, y: Tensor) -> Tensor:
        if self.shortcut is None:
            return self.net(y)
        x = y
        for layer in self.net[:-1]:
            x = layer(x)
        return self.net[-1](x + shuffle(self.shortcut(y), self.stride))  # joins before the output bound


@register("decoder", "gdn")
class GDNDecoder(nn.Module):
    """Balle et al. (2018) synthesis transform: 5x5 stride-2 transposed convs with inverse GDN between them.

    Mirrors encoder ``gdn``: ``stages`` transposed convolutions, the first
    ``stages - 1`` output ``N`` channels, each followed by IGDN; the last one
    outputs 3 channels. As in the paper the output is NOT bounded: values may
    leave [0, 1] (evaluation clamps reconstructions to [0, 1]).

    Args:
        N: hidden channels (default 128).
        M: latent channels (default 192).
        stages: number of stride-2 transposed convolutions, 1..8 (default 4).
        shortcut: ``"none"`` (default) or ``"linear"``: add the encoder's
            linear path, transposed (``1x1 conv -> PixelShuffle(stride)``).
        shortcut_init: ``"pca"`` (default), ``"haar"`` or ``"random"``.
    """

    def __init__(self, N: int = 128, M: int = 192, stages: int = 4, shortcut: str = "none", shortcut_init: str = "pca"):
        super().__init__()
        from compressai.layers import GDN
        from compressai.models.utils import deconv

        name = "decoder 'gdn'"
        N = check_int(name, "N", N)
        M = check_int(name, "M", M)
        stages = check_stages(name, "stages", stages)
        linear = check_shortcut(name, shortcut, shortcut_init)

        layers: list[nn.Module] = []
        in_ch = M
        for _ in range(stages - 1):
            layers += [deconv(in_ch, N), GDN(N, inverse=True)]
            in_ch = N
        layers.append(deconv(in_ch, 3))
        self.net = nn.Sequential(*layers)
        self.N, self.M = N, M
        self.stride = 2**stages
        self.in_channels = M
        self.shortcut = LinearSynthesis(self.stride, M, shortcut_init) if linear else None

    def forward(self, y: Tensor) -> Tensor:
        x = self.net(y)
        return x if self.shortcut is None else x + shuffle(self.shortcut(y), self.stride)


__all__ = ["ConvDecoder", "GDNDecoder", "UPSAMPLES", "OUTPUTS"]
