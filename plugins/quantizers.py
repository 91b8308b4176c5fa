"""Built-in quantizers: latent codecs (``compressai.latent_codecs.LatentCodec``).

Contract shared by every quantizer:

- the first parameter is ``channels`` (latent channels k, injected by the
  model builder from the encoder);
- ``forward(y) -> {"y_hat": Tensor, "likelihoods": {name: Tensor, ...}}``;
- ``compress(y) -> {"strings": [[bytes per image], ...one list per stream],
  "shape": ..., "y_hat": Tensor}`` (batched: B images give B strings per
  stream) and ``decompress(strings, shape) -> {"y_hat": Tensor}``; in eval
  mode ``decompress(compress(y))["y_hat"]`` equals ``forward(y)["y_hat"]``
  bit for bit;
- attribute ``stride``: the divisibility the codec needs on the latent's h, w;
- fixed-rate quantizers also have ``bits`` (nominal rate ``h * w * k * bits``);
- optional ``bitstream_layout(h, w) -> (shape, n_streams)``: for a (k, h, w)
  latent, the ``shape`` that ``compress`` returns and ``decompress`` needs, and
  how many streams it writes (1..8). ``.rdk`` files do not store either: the
  codec derives them from the image size. Without this method the codec
  measures them by compressing a zero latent of that size once per file.

Entropy-coded quantizers need their CDF tables built before ``compress``:
call ``update()`` on the owning ``CompressionModel`` (or on the quantizer).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import (
    EntropyBottleneckLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
    LatentCodec,
)
from compressai.models.base import CompressionModel
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor

from rdkit_ae.errors import FormatError, PluginError
from rdkit_ae.plugins.encoders import check_choice, check_int
from rdkit_ae.registry import register

BOUNDS = ("sigmoid", "clamp")


class BitstreamError(FormatError):
    """A compressed latent string that does not match what the quantizer expects."""


def _check_streams(name: str, strings: Any, streams: int) -> list[list[bytes]]:
    if not isinstance(strings, (list, tuple)) or len(strings) != streams:
        got = len(strings) if isinstance(strings, (list, tuple)) else type(strings).__name__
        raise BitstreamError(f"{name}: expected {streams} stream(s) of strings, got {got}")
    batch = None
    for s in strings:
        if not isinstance(s, (list, tuple)) or not all(isinstance(b, (bytes, bytearray, memoryview)) for b in s):
            raise BitstreamError(f"{name}: each stream must be a list of bytes (one per image)")
        if batch is not None and len(s) != batch:
            raise BitstreamError(f"{name}: streams hold different numbers of images ({batch} vs {len(s)})")
        batch = len(s)
    return [list(s) for s in strings]


def check_bool(plugin: str, param: str, value: object) -> bool:
    """Return ``value`` if it is a boolean (TOML ``true``/``false``), else raise a one-line PluginError."""
    if not isinstance(value, bool):
        raise PluginError(f"{plugin}: {param} must be true or false; got {value!r}")
    return value


def _update_entropy_models(module: nn.Module, scale_table=None, force: bool = False) -> bool:
    """``CompressionModel.update`` for a bare codec: build EntropyBottleneck/GaussianConditional CDFs."""
    return CompressionModel.update(module, scale_table=scale_table, force=force)


# -- fixed-rate scalar quantizers ---------------------------------------------
@register("quantizer", "uniform")
class UniformQuantizer(LatentCodec):
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

    stride = 1

    def __init__(self, channels: int, bits: int = 8, bound: str = "sigmoid"):
        super().__init__()
        name = f"quantizer '{self._plugin_name()}'"
        self.channels = check_int(name, "channels", channels)
        self.bits = check_int(name, "bits", bits, 1, 16)
        self.bound = check_choice(name, "bound", bound, BOUNDS)
        self.levels = 2**self.bits
        self.stride = 1
        # Tracks the module's device so decompress() returns y_hat there.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    @classmethod
    def _plugin_name(cls) -> str:
        return "uniform"

    # -- the quantisation grid --
    def _to_grid(self, y: Tensor) -> Tensor:
        u = torch.sigmoid(y) if self.bound == "sigmoid" else y.clamp(0.0, 1.0)
        return u * (self.levels - 1)

    def _from_grid(self, v_hat: Tensor) -> Tensor:
        return v_hat / (self.levels - 1)

    def _quantize_train(self, v: Tensor) -> Tensor:
        return v + torch.empty_like(v).uniform_(-0.5, 0.5)

    def forward(self, y: Tensor) -> dict[str, Any]:
        v = self._to_grid(y)
        v_hat = self._quantize_train(v) if self.training else torch.round(v)
        likelihoods = torch.full_like(y, 2.0**-self.bits)
        return {"y_hat": self._from_grid(v_hat), "likelihoods": {"y": likelihoods}}

    # -- bitstream --
    def bitstream_layout(self, h: int, w: int) -> tuple[Any, int]:
        """One stream; ``shape`` is the latent's ``(h, w)``."""
        return (h, w), 1

    def _nbytes(self, h: int, w: int) -> int:
        return math.ceil(self.channels * h * w * self.bits / 8)

    def compress(self, y: Tensor) -> dict[str, Any]:
        if y.dim() != 4 or y.size(1) != self.channels:
            raise BitstreamError(
                f"quantizer '{self._plugin_name()}': expected a (B, {self.channels}, h, w) latent, "
                f"got shape {tuple(y.shape)}"
            )
        B, _, h, w = y.shape
        symbols = torch.round(self._to_grid(y)).clamp_(0, self.levels - 1)
        y_hat = self._from_grid(symbols)
        sym = symbols.detach().to("cpu", torch.int64).reshape(B, -1).numpy()
        shifts = np.arange(self.bits - 1, -1, -1, dtype=np.int64)
        bitplanes = ((sym[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(B, -1)
        packed = np.packbits(bitplanes, axis=1)
        strings = [packed[i].tobytes() for i in range(B)]
        return {"strings": [strings], "shape": (int(h), int(w)), "y_hat": y_hat}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Any, **kwargs) -> dict[str, Any]:
        name = f"quantizer '{self._plugin_name()}'"
        (images,) = _check_streams(name, strings, 1)
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise BitstreamError(f"{name}: shape must be (h, w); got {shape!r}") from None
        if h < 1 or w < 1:
            raise BitstreamError(f"{name}: shape must be positive; got {(h, w)}")
        nbytes = self._nbytes(h, w)
        for i, s in enumerate(images):
            if len(s) != nbytes:
                raise BitstreamError(
                    f"{name}: image {i} has {len(s)} bytes, expected {nbytes} for a "
                    f"{self.channels}x{h}x{w} latent at {self.bits} bits"
                )
        B, n = len(images), self.channels * h * w
        raw = np.frombuffer(b"".join(bytes(s) for s in images), dtype=np.uint8).reshape(B, nbytes)
        bitplanes = np.unpackbits(raw, axis=1)[:, : n * self.bits].reshape(B, n, self.bits)
        weights = 1 << np.arange(self.bits - 1, -1, -1, dtype=np.int64)
        sym = (bitplanes.astype(np.int64) * weights).sum(axis=2)
        symbols = torch.from_numpy(sym).reshape(B, self.channels, h, w)
        device = self._device_anchor.device
        y_hat = self._from_grid(symbols.to(device=device, dtype=torch.float32))
        return {"y_hat": y_hat}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, bits={self.bits}, bound={self.bound!r}"


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

    @classmethod
    def _plugin_name(cls) -> str:
        return "ste"

    def _quantize_train(self, v: Tensor) -> Tensor:
        return v + (torch.round(v) - v).detach()


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
        return _update_entropy_models(self, scale_table, force)

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
        strings = _check_streams("quantizer 'factorized-entropy'", strings, 1)
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
class HyperpriorQuantizer(HyperpriorLatentCodec):
    """Entropy-coded latent with a scale hyperprior (Balle et al. 2018): Gaussian conditional + side information.

    ``z = h_a(|y|)`` (3x3 conv + ReLU, then ``hyper_stages`` 5x5 stride-2 convs
    with ReLU between) is coded with an EntropyBottleneck(N); ``h_s(z_hat)``
    (mirrored transposed convs, ending in a 3x3 conv to ``channels`` and a
    ReLU, so scales are >= 0) gives the scales of a zero-mean Gaussian
    conditional for ``y``. Likelihoods ``{"y": ..., "z": ...}``; two rANS
    streams (y, then z), one string per image each; ``shape`` is
    ``{"y": (h, w), "hyper": (h', w')}``. ``stride = 2 ** hyper_stages``.
    Call ``update()`` (on the owning CompressionModel or on this quantizer)
    after training and before ``compress``.

    Args:
        channels: latent channels k.
        N: channels of the hyper-latent z (default 128).
        hyper_stages: stride-2 steps in h_a / h_s, 1..4 (default 2).
        mixed: mixed quantization in training (Minnen & Singh 2020): noisy
            latents for the rate, rounded ones with a straight-through
            gradient for the decoder (``round(y)``) and for ``h_s``
            (``round(z - median) + median``); default false (noise).
    """

    def __init__(self, channels: int, N: int = 128, hyper_stages: int = 2, mixed: bool = False):
        name = "quantizer 'hyperprior'"
        channels = check_int(name, "channels", channels)
        N = check_int(name, "N", N)
        hyper_stages = check_int(name, "hyper_stages", hyper_stages, 1, 4)  # stride 2**hyper_stages pads inputs
        self.mixed = check_bool(name, "mixed", mixed)
        h_a, h_s = _hyper_transforms(channels, N, hyper_stages)
        # CompressAI's "ste" quantizer: noise likelihoods, straight-through rounding around the medians for h_s.
        hyper_q = "ste" if mixed else "noise"
        super().__init__(
            latent_codec={
                "y": GaussianConditionalLatentCodec(gaussian_conditional=GaussianConditional(None), chunks=("scales",)),
                "hyper": HyperLatentCodec(EntropyBottleneck(N), h_a, h_s, quantizer=hyper_q),
            }
        )
        self.channels = channels
        self.N = N
        self.hyper_stages = hyper_stages
        self.stride = 2**hyper_stages

    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the CDF tables (EntropyBottleneck and Gaussian scale table) needed by ``compress``."""
        return _update_entropy_models(self, scale_table, force)

    def forward(self, y: Tensor) -> dict[str, Any]:
        out = super().forward(y)
        if self.mixed and self.training:
            out["y_hat"] = quantize_ste(y)  # zero-mean Gaussian: y is rounded around 0, as compress does
        return out

    def aux_loss(self) -> Tensor:
        return self.hyper.entropy_bottleneck.loss()

    def bitstream_layout(self, h: int, w: int) -> tuple[Any, int]:
        """Two rANS streams (y, then z); z is ``stride`` times smaller than y on each side."""
        return {"y": (h, w), "hyper": (h // self.stride, w // self.stride)}, 2

    def compress(self, y: Tensor) -> dict[str, Any]:
        out = super().compress(y)
        out["shape"] = {k: tuple(int(s) for s in v) for k, v in out["shape"].items()}
        return out

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        strings = _check_streams("quantizer 'hyperprior'", strings, 2)
        if not isinstance(shape, dict) or set(shape) != {"y", "hyper"}:
            raise BitstreamError(
                f"quantizer 'hyperprior': shape must be {{'y': (h, w), 'hyper': (h, w)}}; got {shape!r}"
            )
        shape = {k: tuple(int(s) for s in v) for k, v in shape.items()}
        return super().decompress(strings, shape)


__all__ = [
    "UniformQuantizer",
    "STEQuantizer",
    "FactorizedEntropyQuantizer",
    "HyperpriorQuantizer",
    "BitstreamError",
    "check_bool",
]
