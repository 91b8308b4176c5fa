"""Block transforms: ``PixelUnshuffle(factor)``, a linear orthogonal path and a nonlinear residual at block resolution.

``encoder "block"``: the image is cut into ``factor x factor`` blocks
(``3 * factor**2`` channels); the latent is the sum of a linear 1x1 path
(orthonormal components, see :mod:`rdkit_ae.plugins.linear_paths`) and a
nonlinear residual ``conv3x3 -> GDN -> conv3x3 -> GDN -> conv3x3``. With both
paths the residual's last layer starts at zero, so training starts from the
linear transform coder. ``decoder "block"`` mirrors it: the transpose 1x1
path plus the residual with inverse GDN, then ``PixelShuffle(factor)``. Its
output is not bounded (evaluation clamps to [0, 1]).

``linear = true, nonlinear = false`` is a purely linear transform coder
(PCA or Haar coefficients): the strong, instant baseline the nonlinear
models must beat.
"""

from __future__ import annotations

import torch.nn as nn
from compressai.layers import GDN
from torch import Tensor

from rdkit_ae.errors import PluginError
from rdkit_ae.plugin.checks import check_bool, check_choice, check_int
from rdkit_ae.plugins.linear_paths import INITS, LinearAnalysis, LinearSynthesis, shuffle, unshuffle
from rdkit_ae.registry import register

MAX_FACTOR = 32


def check_factor(plugin: str, factor: object) -> int:
    """A power of two in 1..MAX_FACTOR (the Haar basis and the models' strides need one)."""
    f = check_int(plugin, "factor", factor, 1, MAX_FACTOR)
    if f & (f - 1):
        raise PluginError(f"{plugin}: factor must be a power of two (1, 2, 4, ... {MAX_FACTOR}); got {f}")
    return f


def check_gain(plugin: str, gain: object) -> float:
    """A positive, finite number."""
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < 1e6:
        raise PluginError(f"{plugin}: gain must be a number in (0, 1e6); got {gain!r}")
    return float(gain)


def _options(
    plugin: str, latent_channels: object, channels: object, factor: object, linear: object, nonlinear: object, init: str
) -> tuple[int, int, int, bool, bool, str]:
    """The checked (latent_channels, channels, factor, linear, nonlinear, init) of a block transform."""
    m, c, f = check_int(plugin, "latent_channels", latent_channels), check_int(plugin, "channels", channels), 0
    f = check_factor(plugin, factor)
    lin, nonlin = check_bool(plugin, "linear", linear), check_bool(plugin, "nonlinear", nonlinear)
    if not (lin or nonlin):
        raise PluginError(f"{plugin}: at least one of linear and nonlinear must be true")
    return m, c, f, lin, nonlin, check_choice(plugin, "init", init, INITS)


def _residual(cin: int, hidden: int, cout: int, inverse: bool, zero_last: bool) -> nn.Sequential:
    conv = [nn.Conv2d(cin, hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 3, padding=1)]
    last = nn.Conv2d(hidden, cout, 3, padding=1)
    if zero_last:  # the model starts as its linear path
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]  # Conv2d(bias=True) has one
    return nn.Sequential(conv[0], GDN(hidden, inverse=inverse), conv[1], GDN(hidden, inverse=inverse), last)


@register("encoder", "block")
class BlockEncoder(nn.Module):
    """PixelUnshuffle(factor), then an orthogonal linear 1x1 path plus a nonlinear GDN residual (AuxT-style).

    Args:
        latent_channels: latent channels M (default 48 = 3 * 4 * 4: all
            components of a 4x4 block are kept).
        channels: hidden channels C of the nonlinear residual (default 64).
        factor: block size and stride, a power of two up to 32 (default 4).
        linear: the linear path (default true).
        nonlinear: the nonlinear residual (default true).
        init: the linear path's start: ``"pca"`` (default: the training
            data's block PCA, set at the start of a fresh run), ``"haar"`` or
            ``"random"``.
        gain: scale of the linear path's latent (default 1; the quantizer's
            step is 1 in latent units, so about 10-20 suits a quantizer
            without gain units at 30-35 dB).
    """

    def __init__(
        self,
        latent_channels: int = 48,
        channels: int = 64,
        factor: int = 4,
        linear: bool = True,
        nonlinear: bool = True,
        init: str = "pca",
        gain: float = 1.0,
    ):
        super().__init__()
        name = "encoder 'block'"
        gain = check_gain(name, gain)
        M, C, f, linear, nonlinear, init = _options(name, latent_channels, channels, factor, linear, nonlinear, init)
        d = 3 * f * f
        self.linear = LinearAnalysis(f, M, init, gain) if linear else None
        self.residual = _residual(d, C, M, inverse=False, zero_last=linear) if nonlinear else None
        self.factor = self.stride = f
        self.out_channels = M

    def forward(self, x: Tensor) -> Tensor:
        blocks = unshuffle(x, self.factor)
        y = self.linear(blocks) if self.linear is not None else None
        if self.residual is not None:
            r = self.residual(blocks)
            y = r if y is None else y + r
        assert y is not None
        return y


@register("decoder", "block")
class BlockDecoder(nn.Module):
    """Mirror of encoder ``block``: transpose linear 1x1 path plus a nonlinear IGDN residual, then PixelShuffle.

    Args: as encoder ``block`` (it inherits the encoder's values). The
    output is not bounded; evaluation clamps reconstructions to [0, 1].
    """

    def __init__(
        self,
        latent_channels: int = 48,
        channels: int = 64,
        factor: int = 4,
        linear: bool = True,
        nonlinear: bool = True,
        init: str = "pca",
        gain: float = 1.0,
    ):
        super().__init__()
        name = "decoder 'block'"
        gain = check_gain(name, gain)
        M, C, f, linear, nonlinear, init = _options(name, latent_channels, channels, factor, linear, nonlinear, init)
        d = 3 * f * f
        self.linear = LinearSynthesis(f, M, init, gain) if linear else None
        self.residual = _residual(M, C, d, inverse=True, zero_last=linear) if nonlinear else None
        self.factor = self.stride = f
        self.in_channels = M

    def forward(self, y: Tensor) -> Tensor:
        blocks = self.linear(y) if self.linear is not None else None
        if self.residual is not None:
            r = self.residual(y)
            blocks = r if blocks is None else blocks + r
        assert blocks is not None
        return shuffle(blocks, self.factor)


__all__ = ["BlockEncoder", "BlockDecoder", "MAX_FACTOR", "check_factor", "check_gain"]
