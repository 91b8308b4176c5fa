"""Mean-scale hyperprior quantizer (Minnen, Balle, Toderici 2018; CompressAI's ``mbt2018-mean``).

Composed from CompressAI's latent codecs: a :class:`HyperLatentCodec` codes
``z = h_a(y)`` with an EntropyBottleneck and turns ``z_hat`` into Gaussian
parameters ``h_s(z_hat)``; a :class:`GaussianConditionalLatentCodec` splits
them into (scales, means) and codes ``y``. The layer shapes are those of
CompressAI's ``MeanScaleHyperprior``, so its pretrained weights load (see
:mod:`rdkit_ae.interop`).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import GaussianConditionalLatentCodec, HyperLatentCodec, HyperpriorLatentCodec
from compressai.models.utils import conv, deconv
from torch import Tensor

from rdkit_ae.plugins.encoders import check_int
from rdkit_ae.plugins.quantizers import BitstreamError, _check_streams, _update_entropy_models, check_bool
from rdkit_ae.registry import register

PLUGIN = "mean-scale-hyperprior"


def mean_scale_transforms(channels: int, N: int, stages: int) -> tuple[nn.Sequential, nn.Sequential]:
    """h_a / h_s of CompressAI's MeanScaleHyperprior, generalised to ``stages`` stride-2 steps.

    ``h_a``: 3x3 conv ``channels -> N``, then ``stages`` 5x5 stride-2 convs
    ``N -> N``, LeakyReLU between (no |y|: the means need the sign).
    ``h_s``: ``stages`` 5x5 stride-2 transposed convs ``N -> M ... -> 3M/2``
    with LeakyReLU after each, then a 3x3 conv to ``2M`` (scales, then means).
    With ``stages = 2`` the layer indices and shapes are CompressAI's.
    """
    h_a: list[nn.Module] = [conv(channels, N, kernel_size=3, stride=1), nn.LeakyReLU(inplace=True)]
    for i in range(stages):
        h_a.append(conv(N, N, kernel_size=5, stride=2))
        if i < stages - 1:
            h_a.append(nn.LeakyReLU(inplace=True))
    wide = channels * 3 // 2
    outs = [channels] * (stages - 1) + [wide]
    h_s: list[nn.Module] = []
    in_ch = N
    for out_ch in outs:
        h_s += [deconv(in_ch, out_ch, kernel_size=5, stride=2), nn.LeakyReLU(inplace=True)]
        in_ch = out_ch
    h_s.append(conv(wide, 2 * channels, kernel_size=3, stride=1))
    return nn.Sequential(*h_a), nn.Sequential(*h_s)


@register("quantizer", PLUGIN)
class MeanScaleHyperpriorQuantizer(HyperpriorLatentCodec):
    """Entropy-coded latent with a mean-scale hyperprior (Minnen et al. 2018): Gaussian with predicted means and scales.

    ``z = h_a(y)`` (3x3 conv, then ``hyper_stages`` 5x5 stride-2 convs,
    LeakyReLU between) is coded with an EntropyBottleneck(N); ``h_s(z_hat)``
    (transposed convs to ``channels`` and ``3 * channels // 2``, then a 3x3
    conv to ``2 * channels``) gives the scales and means of the Gaussian
    conditional for ``y``. Unlike ``hyperprior`` (scales only, from ``|y|``),
    y is coded around its predicted mean. Likelihoods ``{"y": ..., "z": ...}``;
    two rANS streams (y, then z), one string per image each; ``shape`` is
    ``{"y": (h, w), "hyper": (h', w')}``; ``stride = 2 ** hyper_stages``.
    With ``hyper_stages = 2`` and the GDN transforms at N, M the model is
    CompressAI's ``mbt2018-mean`` layer for layer. Call ``update()`` before
    ``compress``.

    Args:
        channels: latent channels M.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (Minnen & Singh 2020): noisy
            latents for the rate, ``round(y - mean) + mean`` (and
            ``round(z - median) + median`` for ``h_s``) with a
            straight-through gradient for the decoder; default false (noise).
    """

    def __init__(self, channels: int, N: int = 128, hyper_stages: int = 2, mixed: bool = False):
        name = f"quantizer '{PLUGIN}'"
        channels = check_int(name, "channels", channels, 2)
        N = check_int(name, "N", N)
        hyper_stages = check_int(name, "hyper_stages", hyper_stages, 1, 4)  # stride 2**hyper_stages pads inputs
        mixed = check_bool(name, "mixed", mixed)
        h_a, h_s = mean_scale_transforms(channels, N, hyper_stages)
        # CompressAI's "ste" quantizer is exactly mixed quantization: noise likelihoods, STE-rounded y_hat.
        q = "ste" if mixed else "noise"
        super().__init__(
            latent_codec={
                # CompressAI's MeanScaleHyperprior chunks h_s's output as (scales, means).
                "y": GaussianConditionalLatentCodec(
                    gaussian_conditional=GaussianConditional(None), chunks=("scales", "means"), quantizer=q
                ),
                "hyper": HyperLatentCodec(EntropyBottleneck(N), h_a, h_s, quantizer=q),
            }
        )
        self.channels = channels
        self.N = N
        self.hyper_stages = hyper_stages
        self.mixed = mixed
        self.stride = 2**hyper_stages

    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the CDF tables (EntropyBottleneck and Gaussian scale table) needed by ``compress``."""
        return _update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        return self.hyper.entropy_bottleneck.loss()

    def bitstream_layout(self, h: int, w: int) -> tuple[dict[str, tuple[int, int]], int]:
        """What ``compress`` gives for an (h, w) latent: ``shape`` and the number of streams (for ``.rdk`` files)."""
        return {"y": (h, w), "hyper": (h // self.stride, w // self.stride)}, 2

    def compress(self, y: Tensor) -> dict[str, Any]:
        if y.dim() != 4 or y.size(1) != self.channels:
            raise BitstreamError(
                f"quantizer '{PLUGIN}': expected a (B, {self.channels}, h, w) latent, got shape {tuple(y.shape)}"
            )
        out = super().compress(y)
        out["shape"] = {k: tuple(int(s) for s in v) for k, v in out["shape"].items()}
        return out

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        strings = _check_streams(f"quantizer '{PLUGIN}'", strings, 2)
        if not isinstance(shape, dict) or set(shape) != {"y", "hyper"}:
            raise BitstreamError(f"quantizer '{PLUGIN}': shape must be {{'y': (h, w), 'hyper': (h, w)}}; got {shape!r}")
        try:
            shape = {k: tuple(int(s) for s in v) for k, v in shape.items()}
        except (TypeError, ValueError):
            raise BitstreamError(f"quantizer '{PLUGIN}': shape values must be (h, w); got {shape!r}") from None
        # h_s upsamples the hyper-latent by exactly the stride: any other y shape cannot be decoded.
        if shape["y"] != tuple(s * self.stride for s in shape["hyper"]):
            raise BitstreamError(
                f"quantizer '{PLUGIN}': a {shape['hyper']} hyper-latent gives a "
                f"{tuple(s * self.stride for s in shape['hyper'])} latent, not {shape['y']}"
            )
        y_hat = super().decompress(strings, {"y": shape["y"], "hyper": shape["hyper"]})["y_hat"]
        return {"y_hat": y_hat}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, N={self.N}, hyper_stages={self.hyper_stages}, mixed={self.mixed}"


__all__ = ["MeanScaleHyperpriorQuantizer", "mean_scale_transforms"]
