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

import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor

from rdkit_ae.plugins.encoders import check_int
from rdkit_ae.plugins.meanscale import mean_scale_transforms
from rdkit_ae.plugins.quantizers import BitstreamError, _check_streams, _update_entropy_models, check_bool
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
class CheckerboardQuantizer(HyperpriorLatentCodec):
    """Mean-scale hyperprior + checkerboard spatial context (He et al. 2021): two parallel decoding passes.

    Side parameters come from the mean-scale hyperprior (``h_a``/``h_s`` as in
    ``mean-scale-hyperprior``); the anchors (latent positions with ``i + j``
    even) are coded with Gaussian (scales, means) predicted from them alone,
    the non-anchors from them and a masked 5x5 convolution of the decoded
    anchors (a 1x1 network merges the two). Likelihoods ``{"y", "z"}``;
    three rANS streams (anchors, non-anchors, z), one string per image each;
    ``shape`` is ``{"y": (channels, h, w), "hyper": (h', w')}``;
    ``stride = 2 ** hyper_stages``. Call ``update()`` before ``compress``.

    Args:
        channels: latent channels M.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (default true): noisy latents
            for the rate, straight-through rounding around the predicted
            means (and z around its medians) for the context and the
            decoder; false: noise everywhere, one pass (faster, worse).
    """

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
        hyper = HyperLatentCodec(EntropyBottleneck(N), h_a, h_s, quantizer="ste" if mixed else "noise")
        super().__init__(latent_codec={"y": y_codec, "hyper": hyper})
        self.channels = channels
        self.N = N
        self.hyper_stages = hyper_stages
        self.mixed = mixed
        # The checkerboard splits each latent row in two halves: h_s's stride keeps the width even.
        self.stride = 2**hyper_stages

    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the CDF tables (EntropyBottleneck and Gaussian scale table) needed by ``compress``."""
        return _update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        return self.hyper.entropy_bottleneck.loss()

    def bitstream_layout(self, h: int, w: int) -> tuple[dict[str, tuple[int, ...]], int]:
        """Three streams (anchors, non-anchors, z); z is ``stride`` times smaller than y on each side."""
        return {"y": (self.channels, h, w), "hyper": (h // self.stride, w // self.stride)}, STREAMS

    def compress(self, y: Tensor) -> dict[str, Any]:
        if y.dim() != 4 or y.size(1) != self.channels or y.size(-1) % 2 or y.size(-2) % 2:
            raise BitstreamError(
                f"quantizer '{PLUGIN}': expected a (B, {self.channels}, h, w) latent with even h and w, "
                f"got shape {tuple(y.shape)}"
            )
        out = super().compress(y)
        out["shape"] = {k: tuple(int(s) for s in v) for k, v in out["shape"].items()}
        return out

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        strings = _check_streams(f"quantizer '{PLUGIN}'", strings, STREAMS)
        shape = self._check_shape(shape)
        return {"y_hat": super().decompress(strings, shape)["y_hat"]}

    def _check_shape(self, shape: Any) -> dict[str, tuple[int, ...]]:
        what = f"quantizer '{PLUGIN}': shape must be {{'y': (channels, h, w), 'hyper': (h, w)}}"
        if not isinstance(shape, dict) or set(shape) != {"y", "hyper"}:
            raise BitstreamError(f"{what}; got {shape!r}")
        try:
            y, hyper = tuple(int(s) for s in shape["y"]), tuple(int(s) for s in shape["hyper"])
        except (TypeError, ValueError):
            raise BitstreamError(f"{what}; got {shape!r}") from None
        if len(y) != 3 or len(hyper) != 2 or min(hyper) < 1:
            raise BitstreamError(f"{what}; got {shape!r}")
        # h_s upsamples the hyper-latent by exactly the stride: any other y shape cannot be decoded.
        expected = (self.channels, *(s * self.stride for s in hyper))
        if y != expected:
            raise BitstreamError(f"quantizer '{PLUGIN}': a {hyper} hyper-latent gives a {expected} latent, not {y}")
        return {"y": y, "hyper": hyper}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, N={self.N}, hyper_stages={self.hyper_stages}, mixed={self.mixed}"


__all__ = ["CheckerboardQuantizer", "entropy_parameters"]
