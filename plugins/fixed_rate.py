"""Built-in fixed-rate quantizers: ``uniform`` (noise in training) and ``ste`` (straight-through rounding).

Both bound the latent to [0, 1] and code ``bits`` bits per element with no
entropy coding: the rate is exactly ``h * w * k * bits`` (the seed's eq. 4).
The bitstream, checks and device handling are
:class:`rdkit_ae.plugin.FixedRateQuantizer`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rdkit_ae.plugin import FixedRateQuantizer, check_choice
from rdkit_ae.registry import register

BOUNDS = ("sigmoid", "clamp")


@register("quantizer", "uniform")
class UniformQuantizer(FixedRateQuantizer):
    """Fixed-rate scalar quantizer: bound latents to [0, 1], 2**bits levels, additive noise in training.

    The latent is bounded to [0, 1] (``bound="sigmoid"``: ``torch.sigmoid``;
    ``"clamp"``: clamp to [0, 1]) and mapped to ``L = 2**bits`` levels,
    ``v = u * (L - 1)``. Training uses ``v + U[-0.5, 0.5)`` noise; eval rounds.
    The decoder sees the dequantised ``y_hat = v_hat / (L - 1)`` in [0, 1].

    Likelihoods are the constant ``2**-bits`` per element (so a rate loss reads
    exactly ``bits`` bits per latent element). The bitstream is one string per
    image: the integer symbols as ``bits``-bit big-endian integers in C order
    over (k, h, w), packed with ``numpy.packbits``: exactly
    ``ceil(k * h * w * bits / 8)`` bytes, no header; ``shape`` is ``(h, w)``.

    Args:
        channels: latent channels k.
        bits: bits per latent element, 1..16 (default 8).
        bound: ``"sigmoid"`` (default) or ``"clamp"``.
    """

    plugin_name = "uniform"

    def __init__(self, channels: int, bits: int = 8, bound: str = "sigmoid"):
        super().__init__(channels, bits)
        self.bound = check_choice(self.label, "bound", bound, BOUNDS)

    def to_grid(self, y: Tensor) -> Tensor:
        u = torch.sigmoid(y) if self.bound == "sigmoid" else y.clamp(0.0, 1.0)
        return u * (self.levels - 1)

    def from_grid(self, v_hat: Tensor) -> Tensor:
        return v_hat / (self.levels - 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bound={self.bound!r}"


@register("quantizer", "ste")
class STEQuantizer(UniformQuantizer):
    """Fixed-rate scalar quantizer trained with straight-through rounding (same grid and bitstream as uniform).

    Identical to ``uniform`` except in training, where the forward pass rounds
    (``v + (round(v) - v).detach()``) and the backward pass treats rounding as
    the identity.

    Args:
        channels: latent channels k.
        bits: bits per latent element, 1..16 (default 8).
        bound: ``"sigmoid"`` (default) or ``"clamp"``.
    """

    plugin_name = "ste"

    def quantize_train(self, v: Tensor) -> Tensor:
        return v + (torch.round(v) - v).detach()


__all__ = ["UniformQuantizer", "STEQuantizer"]
