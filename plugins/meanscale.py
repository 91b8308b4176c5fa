"""Mean-scale hyperprior quantizer (Minnen, Balle, Toderici 2018; CompressAI's ``mbt2018-mean``).

Composed from CompressAI's latent codecs: a :class:`HyperLatentCodec` codes
``z = h_a(y)`` with an EntropyBottleneck and turns ``z_hat`` into Gaussian
parameters ``h_s(z_hat)``; a :class:`GaussianConditionalLatentCodec` splits
them into (scales, means) and codes ``y``. The layer shapes are those of
CompressAI's ``MeanScaleHyperprior``, so its pretrained weights load (see
:mod:`rdkit_ae.interop`).
"""

from __future__ import annotations

import torch.nn as nn
from compressai.entropy_models import GaussianConditional
from compressai.latent_codecs import GaussianConditionalLatentCodec
from compressai.models.utils import conv, deconv

from rdkit_ae.plugin import HyperpriorCodec, check_bool, check_int
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
class MeanScaleHyperpriorQuantizer(HyperpriorCodec):
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
    ``compress``; files then decode the same on every machine (scales and
    means come from an integer copy of ``h_s``, on a 2**-8 grid).

    Args:
        channels: latent channels M.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (Minnen & Singh 2020): noisy
            latents for the rate, ``round(y - mean) + mean`` (and
            ``round(z - median) + median`` for ``h_s``) with a
            straight-through gradient for the decoder; default false (noise).
    """

    plugin_name = PLUGIN

    def __init__(self, channels: int, N: int = 128, hyper_stages: int = 2, mixed: bool = False):
        name = f"quantizer '{PLUGIN}'"
        channels = check_int(name, "channels", channels, 2)
        N = check_int(name, "N", N)
        hyper_stages = check_int(name, "hyper_stages", hyper_stages, 1, 4)  # stride 2**hyper_stages pads inputs
        mixed = check_bool(name, "mixed", mixed)
        h_a, h_s = mean_scale_transforms(channels, N, hyper_stages)
        # CompressAI's "ste" quantizer is exactly mixed quantization: noise likelihoods, STE-rounded y_hat.
        q = "ste" if mixed else "noise"
        # CompressAI's MeanScaleHyperprior chunks h_s's output as (scales, means).
        y_codec = GaussianConditionalLatentCodec(
            gaussian_conditional=GaussianConditional(None), chunks=("scales", "means"), quantizer=q
        )
        super().__init__(channels, N, hyper_stages, h_a, h_s, y_codec, q)
        self.mixed = mixed

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mixed={self.mixed}"


__all__ = ["MeanScaleHyperpriorQuantizer", "mean_scale_transforms"]
