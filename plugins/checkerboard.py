"""Checkerboard context model (He et al., CVPR 2021) on a mean-scale hyperprior: spatial context, parallel decoding.

Composed from CompressAI's latent codecs, as its ``cheng2020-anchor-checkerboard``:
a :class:`HyperLatentCodec` (the mean-scale hyperprior of
:mod:`rdkit_ae.plugins.meanscale`) gives side parameters; a
:class:`CheckerboardLatentCodec` codes the anchors (half the latent, a
checkerboard) from them alone, then the non-anchors from them plus a masked
5x5 convolution of the decoded anchors. Both halves decode in one parallel
pass each, unlike a raster-scan autoregressive context.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from compressai.entropy_models import GaussianConditional
from compressai.latent_codecs import CheckerboardLatentCodec, GaussianConditionalLatentCodec
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor

from rdkit_ae.plugin import HyperpriorCodec, IntegerNetwork, check_bool, check_int
from rdkit_ae.plugin import gaussian as G
from rdkit_ae.plugins.meanscale import mean_scale_transforms
from rdkit_ae.registry import register

PLUGIN = "checkerboard"
STREAMS = 3  # anchors, non-anchors, hyper-latent


class _Checkerboard(CheckerboardLatentCodec):
    """CompressAI's two-pass checkerboard (STE around the predicted means); one noisy pass when not ``mixed``."""

    def __init__(self, *args, mixed: bool, **kwargs):
        super().__init__(*args, forward_method="twopass", **kwargs)
        self.mixed = mixed

    def forward(self, y: Tensor, side_params: Tensor) -> dict[str, Any]:
        if self.training and not self.mixed:
            return self._forward_onepass(y, side_params)
        # Eval: the two passes quantise around the predicted means, as compress does.
        return self._forward_twopass(y, side_params)


def entropy_parameters(channels: int) -> nn.Sequential:
    """Pointwise (1x1) network from (context, side params) = 4M channels to (scales, means) = 2M, as Cheng 2020."""
    M = channels
    return nn.Sequential(
        nn.Conv2d(M * 12 // 3, M * 10 // 3, 1),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(M * 10 // 3, M * 8 // 3, 1),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(M * 8 // 3, M * 6 // 3, 1),
    )


@register("quantizer", PLUGIN)
class CheckerboardQuantizer(HyperpriorCodec):
    """Mean-scale hyperprior + checkerboard spatial context (He et al. 2021): two parallel decoding passes.

    Side parameters come from the mean-scale hyperprior (``h_a``/``h_s`` as in
    ``mean-scale-hyperprior``); the anchors (latent positions with ``i + j``
    even) are coded with Gaussian (scales, means) predicted from them alone,
    the non-anchors from them and a masked 5x5 convolution of the decoded
    anchors (a 1x1 network merges the two). Likelihoods ``{"y", "z"}``;
    three rANS streams (anchors, non-anchors, z), one string per image each;
    ``shape`` is ``{"y": (channels, h, w), "hyper": (h', w')}``;
    ``stride = 2 ** hyper_stages``. Call ``update()`` before ``compress``;
    files then decode the same on every machine (side parameters, context
    and entropy parameters come from integer copies of the networks).

    Args:
        channels: latent channels M.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (default true): noisy latents
            for the rate, straight-through rounding around the predicted
            means (and z around its medians) for the context and the
            decoder; false: noise everywhere, one pass (faster, worse).
    """

    plugin_name = PLUGIN
    streams = STREAMS

    def __init__(self, channels: int, N: int = 128, hyper_stages: int = 2, mixed: bool = True):
        name = f"quantizer '{PLUGIN}'"
        channels = check_int(name, "channels", channels, 2)
        N = check_int(name, "N", N)
        hyper_stages = check_int(name, "hyper_stages", hyper_stages, 1, 4)
        mixed = check_bool(name, "mixed", mixed)
        h_a, h_s = mean_scale_transforms(channels, N, hyper_stages)
        y_codec = _Checkerboard(
            latent_codec={"y": GaussianConditionalLatentCodec(gaussian_conditional=GaussianConditional(None))},
            entropy_parameters=entropy_parameters(channels),
            context_prediction=CheckerboardMaskedConv2d(channels, 2 * channels, kernel_size=5, stride=1, padding=2),
            mixed=mixed,
        )
        # The checkerboard splits each latent row in two halves: h_s's stride keeps the width even.
        super().__init__(channels, N, hyper_stages, h_a, h_s, y_codec, "ste" if mixed else "noise")
        self.mixed = mixed
        self.exact_context = IntegerNetwork(y_codec.context_prediction)
        self.exact_parameters = IntegerNetwork(y_codec.entropy_parameters)

    @property
    def gaussian(self) -> GaussianConditional:
        return self.y.latent_codec["y"].gaussian_conditional

    def _y_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.channels, h, w)

    def _latent_stride(self) -> int:
        return 2

    # -- the exact two passes: anchors from the side parameters alone, then the rest with their context --
    def _pass_parameters(self, side_half: Tensor, anchors: Tensor | None) -> tuple[Tensor, Tensor]:
        """(scales, means) on the grid for one half: ``anchors`` None for the anchors' own pass (no context)."""
        cb = self.y
        if anchors is None:  # no context: zeros in the first 2M input channels, whose products are skipped
            params = self.exact_parameters(side_half, skip=side_half.size(1))
        else:
            # Only the non-anchors' context is used: computed at those positions alone (half the work).
            embedded = cb.embed(torch.stack([anchors, torch.zeros_like(anchors)]))
            context = self.exact_context.forward_parity(embedded, 1 if cb.anchor_parity == "even" else 0)
            params = self.exact_parameters(torch.cat([context, side_half], dim=1))
        scales, means = self._split(params)
        assert means is not None
        return scales, means

    def _encode_y(self, y: Tensor, side: Tensor) -> tuple[list[list[bytes]], Tensor]:
        cb, gc = self.y, self.gaussian
        side_, y_ = cb.unembed(side), cb.unembed(y)
        strings: list[list[bytes]] = []
        halves: list[Tensor] = []
        for i in range(2):
            scales, means = self._pass_parameters(side_[i], halves[0] if i else None)
            symbols, y_hat = G.quantize(y_[i], means)
            strings.append(G.encode(gc, symbols, G.scale_indexes(gc, scales)))
            halves.append(y_hat)
        return strings, cb.embed(torch.stack(halves))

    def _decode_y(self, strings: list[list[bytes]], shape: tuple[int, ...], side: Tensor) -> Tensor:
        cb, gc = self.y, self.gaussian
        side_ = cb.unembed(side)
        halves: list[Tensor] = []
        for i in range(2):
            scales, means = self._pass_parameters(side_[i], halves[0] if i else None)
            halves.append(G.dequantize(G.decode(gc, strings[i], G.scale_indexes(gc, scales)), means))
        return cb.embed(torch.stack(halves))

    def _quantize_y(self, y: Tensor, side: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        cb = self.y
        side_, y_ = cb.unembed(side), cb.unembed(y)
        halves: list[Tensor] = []
        scales: list[Tensor] = []
        means: list[Tensor] = []
        for i in range(2):
            s, m = self._pass_parameters(side_[i], halves[0] if i else None)
            halves.append(G.quantize(y_[i], m)[1])
            scales.append(s)
            means.append(m)
        return cb.embed(torch.stack(halves)), cb.embed(torch.stack(scales)), cb.embed(torch.stack(means))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mixed={self.mixed}"


__all__ = ["CheckerboardQuantizer", "entropy_parameters"]
