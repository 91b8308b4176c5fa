"""Built-in entropy-coded quantizers: ``factorized-entropy`` and the scale ``hyperprior``.

Contract shared by every quantizer (the README's plugin table has it whole):
``forward(y) -> {"y_hat", "likelihoods"}``; ``compress(y) -> {"strings",
"shape", "y_hat"}`` (B images give B strings per stream);
``decompress(strings, shape) -> {"y_hat"}`` on the module's device; in eval
mode ``decompress(compress(y))["y_hat"]`` equals ``forward(y)["y_hat"]`` bit
for bit; ``stride``; optional ``bitstream_layout(h, w)``; ``aux_loss()`` if
it has an auxiliary term; ``update()`` builds what coding needs.

Entropy-coded quantizers need their CDF tables built before ``compress``:
call ``update()`` on the owning ``CompressionModel`` (or on the quantizer).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import EntropyBottleneckLatentCodec, GaussianConditionalLatentCodec
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor

from rdkit_ae.plugin import HyperpriorCodec, check_bool, check_int, check_streams, update_entropy_models
from rdkit_ae.registry import register


# -- entropy-coded quantizers -------------------------------------------------
@register("quantizer", "factorized-entropy")
class FactorizedEntropyQuantizer(EntropyBottleneckLatentCodec):
    """Entropy-coded latent with a learned factorized prior (CompressAI EntropyBottleneck, rANS).

    Uniform noise in training, rounding around the learned medians in eval;
    likelihoods ``{"y": ...}`` for the rate term; the EntropyBottleneck's
    quantiles are trained by the aux loss (``CompressionModel.aux_loss``).
    One rANS stream, one string per image; ``shape`` is ``(h, w)``.
    Call ``update()`` (on the owning CompressionModel or on this quantizer)
    after training and before ``compress``.

    Args:
        channels: latent channels k.
        mixed: mixed quantization in training (Minnen & Singh 2020): the
            rate still comes from noisy latents, but the decoder gets
            ``round(y - median) + median`` with a straight-through gradient,
            as it will after training (default false: noise for both).
    """

    def __init__(self, channels: int, mixed: bool = False):
        channels = check_int("quantizer 'factorized-entropy'", "channels", channels)
        self.mixed = check_bool("quantizer 'factorized-entropy'", "mixed", mixed)
        super().__init__(EntropyBottleneck(channels))
        self.channels = channels
        self.stride = 1

    def forward(self, y: Tensor) -> dict[str, Any]:
        out = super().forward(y)
        if self.mixed and self.training:
            medians = self.entropy_bottleneck._get_medians()
            out["y_hat"] = quantize_ste(y - medians) + medians
        return out

    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the CDF tables needed by ``compress``/``decompress``."""
        return update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss()

    def bitstream_layout(self, h: int, w: int) -> tuple[Any, int]:
        """One rANS stream; ``shape`` is the latent's ``(h, w)``."""
        return (h, w), 1

    def compress(self, y: Tensor) -> dict[str, Any]:
        # CompressAI's codec decodes its own strings to return y_hat; rounding
        # around the medians gives the same tensor without a second rANS pass.
        eb = self.entropy_bottleneck
        medians = eb._get_medians()
        y_hat = eb.dequantize(eb.quantize(y, "symbols", medians), medians)
        return {"strings": [eb.compress(y)], "shape": tuple(int(s) for s in y.shape[-2:]), "y_hat": y_hat}

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        strings = check_streams("quantizer 'factorized-entropy'", strings, 1)
        return super().decompress(strings, tuple(int(s) for s in shape))


class _Abs(nn.Module):
    """|y|: the scale hyperprior only needs the magnitudes of the latent."""

    def forward(self, y: Tensor) -> Tensor:
        return y.abs()


def _hyper_transforms(channels: int, N: int, stages: int) -> tuple[nn.Module, nn.Module]:
    """Balle 2018 scale hyperprior h_a / h_s with ``stages`` stride-2 steps."""
    h_a: list[nn.Module] = [_Abs(), conv(channels, N, kernel_size=3, stride=1), nn.ReLU(inplace=True)]
    for i in range(stages):
        h_a.append(conv(N, N, kernel_size=5, stride=2))
        if i < stages - 1:
            h_a.append(nn.ReLU(inplace=True))
    h_s: list[nn.Module] = []
    for _ in range(stages):
        h_s += [deconv(N, N, kernel_size=5, stride=2), nn.ReLU(inplace=True)]
    h_s += [conv(N, channels, kernel_size=3, stride=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*h_a), nn.Sequential(*h_s)


@register("quantizer", "hyperprior")
class HyperpriorQuantizer(HyperpriorCodec):
    """Entropy-coded latent with a scale hyperprior (Balle et al. 2018): Gaussian conditional + side information.

    ``z = h_a(|y|)`` (3x3 conv + ReLU, then ``hyper_stages`` 5x5 stride-2 convs
    with ReLU between) is coded with an EntropyBottleneck(N); ``h_s(z_hat)``
    (mirrored transposed convs, ending in a 3x3 conv to ``channels`` and a
    ReLU, so scales are >= 0) gives the scales of a zero-mean Gaussian
    conditional for ``y``. Likelihoods ``{"y": ..., "z": ...}``; two rANS
    streams (y, then z), one string per image each; ``shape`` is
    ``{"y": (h, w), "hyper": (h', w')}``. ``stride = 2 ** hyper_stages``.
    Call ``update()`` (on the owning CompressionModel or on this quantizer)
    after training and before ``compress``; files then decode the same on
    every machine (the scales come from an integer copy of ``h_s``).

    Args:
        channels: latent channels k.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (Minnen & Singh 2020): noisy
            latents for the rate, rounded ones with a straight-through
            gradient for the decoder (``round(y)``) and for ``h_s``
            (``round(z - median) + median``); default false (noise).
    """

    plugin_name = "hyperprior"

    def __init__(self, channels: int, N: int = 128, hyper_stages: int = 2, mixed: bool = False):
        name = f"quantizer '{self.plugin_name}'"
        channels = check_int(name, "channels", channels)
        N = check_int(name, "N", N)
        hyper_stages = check_int(name, "hyper_stages", hyper_stages, 1, 4)  # stride 2**hyper_stages pads inputs
        self.mixed = check_bool(name, "mixed", mixed)
        h_a, h_s = _hyper_transforms(channels, N, hyper_stages)
        y_codec = GaussianConditionalLatentCodec(gaussian_conditional=GaussianConditional(None), chunks=("scales",))
        # CompressAI's "ste" quantizer: noise likelihoods, straight-through rounding around the medians for h_s.
        super().__init__(channels, N, hyper_stages, h_a, h_s, y_codec, "ste" if mixed else "noise")

    def float_forward(self, y: Tensor) -> dict[str, Any]:
        out = super().float_forward(y)
        if self.mixed and self.training:
            out["y_hat"] = quantize_ste(y)  # zero-mean Gaussian: y is rounded around 0, as compress does
        return out


__all__ = ["FactorizedEntropyQuantizer", "HyperpriorQuantizer"]
