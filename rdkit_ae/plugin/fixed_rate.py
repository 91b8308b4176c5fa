"""A base for fixed-rate scalar quantizers: ``bits`` bits per latent element, packed, on the model's device.

A subclass says how latents map to the grid of ``2**bits`` levels
(:meth:`FixedRateQuantizer.to_grid` / :meth:`~FixedRateQuantizer.from_grid`)
and, optionally, how training approximates rounding
(:meth:`~FixedRateQuantizer.quantize_train`). The base does the rest of the
contract: likelihoods of exactly ``bits`` bits, the bitstream (symbols as
``bits``-bit big-endian integers over (k, h, w), ``numpy.packbits``, no
header: ``ceil(k*h*w*bits/8)`` bytes per image), its checks, and
``decompress`` returning ``y_hat`` on the module's device (which strings,
being bytes, do not carry).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from compressai.latent_codecs import LatentCodec
from torch import Tensor

from rdkit_ae.plugin.checks import BitstreamError, check_int, check_latent, check_streams


class FixedRateQuantizer(LatentCodec):
    """Base class: ``2**bits`` levels per latent element, a fixed number of bytes per image.

    Args:
        channels: latent channels k.
        bits: bits per latent element, 1..16.
    """

    stride = 1
    plugin_name = "fixed-rate"

    def __init__(self, channels: int, bits: int = 8):
        super().__init__()
        self.channels = check_int(self.label, "channels", channels)
        self.bits = check_int(self.label, "bits", bits, 1, 16)
        self.levels = 2**self.bits
        # A parameter-free module has no other way to know where it lives: .to(device) moves this buffer.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    @property
    def label(self) -> str:
        return f"quantizer '{self.plugin_name}'"

    @property
    def device(self) -> torch.device:
        """The module's device (where ``decompress`` puts ``y_hat``)."""
        return self._device_anchor.device

    # -- what a subclass defines ----------------------------------------------------
    def to_grid(self, y: Tensor) -> Tensor:
        """Latent -> continuous grid values in [0, levels - 1]."""
        raise NotImplementedError

    def from_grid(self, v_hat: Tensor) -> Tensor:
        """Integer grid values -> the decoder's latent."""
        raise NotImplementedError

    def quantize_train(self, v: Tensor) -> Tensor:
        """Training's stand-in for rounding (default: additive uniform noise)."""
        return v + torch.empty_like(v).uniform_(-0.5, 0.5)

    # -- the contract -----------------------------------------------------------------
    def forward(self, y: Tensor) -> dict[str, Any]:
        v = self.to_grid(y)
        v_hat = self.quantize_train(v) if self.training else torch.round(v)
        likelihoods = torch.full_like(y, 2.0**-self.bits)
        return {"y_hat": self.from_grid(v_hat), "likelihoods": {"y": likelihoods}}

    def bitstream_layout(self, h: int, w: int) -> tuple[Any, int]:
        """One stream; ``shape`` is the latent's ``(h, w)``."""
        return (h, w), 1

    def nbytes(self, h: int, w: int) -> int:
        """Bytes per image for an (h, w) latent."""
        return math.ceil(self.channels * h * w * self.bits / 8)

    def compress(self, y: Tensor) -> dict[str, Any]:
        check_latent(self.label, y, self.channels)
        B, _, h, w = y.shape
        symbols = torch.round(self.to_grid(y)).clamp_(0, self.levels - 1)
        sym = symbols.detach().to("cpu", torch.int64).reshape(B, -1).numpy()
        shifts = np.arange(self.bits - 1, -1, -1, dtype=np.int64)
        bitplanes = ((sym[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(B, -1)
        packed = np.packbits(bitplanes, axis=1)
        strings = [packed[i].tobytes() for i in range(B)]
        return {"strings": [strings], "shape": (int(h), int(w)), "y_hat": self.from_grid(symbols)}

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Any, **kwargs) -> dict[str, Any]:
        (images,) = check_streams(self.label, strings, 1)
        h, w = self._check_shape(shape)
        nbytes = self.nbytes(h, w)
        for i, s in enumerate(images):
            if len(s) != nbytes:
                raise BitstreamError(
                    f"{self.label}: image {i} has {len(s)} bytes, expected {nbytes} for a "
                    f"{self.channels}x{h}x{w} latent at {self.bits} bits"
                )
        B, n = len(images), self.channels * h * w
        raw = np.frombuffer(b"".join(bytes(s) for s in images), dtype=np.uint8).reshape(B, nbytes)
        bitplanes = np.unpackbits(raw, axis=1)[:, : n * self.bits].reshape(B, n, self.bits)
        weights = 1 << np.arange(self.bits - 1, -1, -1, dtype=np.int64)
        sym = (bitplanes.astype(np.int64) * weights).sum(axis=2)
        symbols = torch.from_numpy(sym).reshape(B, self.channels, h, w)
        return {"y_hat": self.from_grid(symbols.to(device=self.device, dtype=torch.float32))}

    def _check_shape(self, shape: Any) -> tuple[int, int]:
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise BitstreamError(f"{self.label}: shape must be (h, w); got {shape!r}") from None
        if h < 1 or w < 1:
            raise BitstreamError(f"{self.label}: shape must be positive; got {(h, w)}")
        return h, w

    def extra_repr(self) -> str:
        return f"channels={self.channels}, bits={self.bits}"


__all__ = ["FixedRateQuantizer"]
