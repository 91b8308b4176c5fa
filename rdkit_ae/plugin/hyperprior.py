"""The hyperprior family's base: side information ``z``, a Gaussian conditional for ``y``, a portable decoder.

``hyperprior``, ``mean-scale-hyperprior``, ``checkerboard`` and a third
party's variant share everything but their transforms and how ``y`` is
coded from the side parameters: tables (``update``), the aux loss, the
bitstream layout, the shape checks, and the **exact entropy-parameter path**.

Once ``update()`` has built the tables, ``compress``, ``decompress`` and
eval-mode ``forward`` compute the side parameters with an
:class:`~rdkit_ae.plugin.exact.IntegerNetwork` copy of ``h_s`` (and of a
context model), so a file decodes to the same symbols on every CPU, thread
count and device (see docs/format.md, Determinism). Training, and a model
whose tables are not built, use the float networks. ``portable = False``
(set by the codec while it decodes a version 1 or 2 file) restores the
float path those files were written with.

A subclass passes its ``h_a``, ``h_s`` and ``y`` codec and, for a context
model, overrides :meth:`_encode_y`, :meth:`_decode_y` and :meth:`_quantize_y`.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import HyperLatentCodec, HyperpriorLatentCodec
from torch import Tensor, nn

from rdkit_ae.plugin import gaussian as G
from rdkit_ae.plugin.checks import BitstreamError, check_latent, check_shape, check_streams
from rdkit_ae.plugin.exact import IntegerNetwork, from_grid, to_grid
from rdkit_ae.plugin.tables import update_entropy_models


class HyperpriorCodec(HyperpriorLatentCodec):
    """Base of the hyperprior family (a CompressAI ``HyperpriorLatentCodec``) with a portable decoder.

    Args:
        channels: latent channels of ``y``.
        N: channels of the hyper-latent ``z``.
        hyper_stages: stride-2 steps in ``h_a``/``h_s`` (``stride = 2**hyper_stages``).
        h_a, h_s: the hyper analysis and synthesis (``h_s`` must be convolutions and (leaky) ReLUs).
        y_codec: codes ``y`` from ``h_s``'s output, e.g. a ``GaussianConditionalLatentCodec``.
        hyper_quantizer: CompressAI's ``"noise"`` or ``"ste"`` for ``z`` in training.
        name: the plugin name, for error messages.
    """

    streams = 2  # y, then z
    plugin_name = "hyperprior"

    def __init__(
        self,
        channels: int,
        N: int,
        hyper_stages: int,
        h_a: nn.Module,
        h_s: nn.Module,
        y_codec: nn.Module,
        hyper_quantizer: str = "noise",
    ):
        hyper = HyperLatentCodec(EntropyBottleneck(N), h_a, h_s, quantizer=hyper_quantizer)
        super().__init__(latent_codec={"y": y_codec, "hyper": hyper})
        self.channels, self.N, self.hyper_stages = channels, N, hyper_stages
        self.stride = 2**hyper_stages
        self.exact_h_s = IntegerNetwork(h_s)
        # False only while a version 1/2 file (written by the float path) is decoded.
        self.portable = True

    @property
    def label(self) -> str:
        return f"quantizer '{self.plugin_name}'"

    # -- tables, aux loss, layout -----------------------------------------------------
    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the CDF tables and the integer networks that ``compress``/``decompress`` need."""
        return update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        return self.hyper.entropy_bottleneck.loss()

    def _y_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (h, w)

    def bitstream_layout(self, h: int, w: int) -> tuple[dict[str, tuple[int, ...]], int]:
        """``shape`` and stream count for an (h, w) latent; z is ``stride`` times smaller on each side."""
        return {"y": self._y_shape(h, w), "hyper": (h // self.stride, w // self.stride)}, self.streams

    def _file_shape(self, shape: Any) -> dict[str, tuple[int, ...]]:
        """A shape handed to ``decompress``: well formed, and the one that the hyper-latent's size gives."""
        shape = check_shape(self.label, shape, {"y": len(self._y_shape(1, 1)), "hyper": 2})
        h, w = (s * self.stride for s in shape["hyper"])
        if shape["y"] != self._y_shape(h, w):  # h_s upsamples z by exactly the stride
            raise BitstreamError(
                f"{self.label}: a {shape['hyper']} hyper-latent gives a {self._y_shape(h, w)} latent, not {shape['y']}"
            )
        return shape

    # -- which path -----------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """Whether coding uses the integer networks (tables built, and not decoding an old file)."""
        return self.portable and all(net.ready for net in self.integer_networks())

    def integer_networks(self) -> list[IntegerNetwork]:
        return [m for m in self.modules() if isinstance(m, IntegerNetwork)]

    @property
    def gaussian(self) -> GaussianConditional:
        return self.y.gaussian_conditional

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor | None]:
        """(scales, means) from the side parameters, as the y codec's ``chunks`` say (no means: zero)."""
        chunks = tuple(getattr(self.y, "chunks", ("scales", "means")))
        if chunks == ("scales",):
            return params, None
        first, second = params.chunk(2, 1)
        return (first, second) if chunks == ("scales", "means") else (second, first)

    # -- training and float evaluation --------------------------------------------------
    def float_forward(self, y: Tensor) -> dict[str, Any]:
        """The float (training) forward pass; subclasses adjust it (mixed quantization)."""
        return HyperpriorLatentCodec.forward(self, y)

    def forward(self, y: Tensor) -> dict[str, Any]:
        if self.training or not self.exact:
            return self.float_forward(y)
        # Eval with tables built: what decompress(compress(y)) gives, with the likelihoods of those parameters.
        z = self.hyper.h_a(y)
        z_hat, z_likelihoods = self.hyper.entropy_bottleneck(z)
        y_hat, scales, means = self._quantize_y(y, self._side(z_hat))
        likelihoods = self._likelihood(self.gaussian, y_hat, scales, means)
        return {"y_hat": self._to_latent(y_hat, y), "likelihoods": {"y": likelihoods, "z": z_likelihoods}}

    @staticmethod
    def _likelihood(gc: GaussianConditional, y_hat: Tensor, scales: Tensor, means: Tensor | None) -> Tensor:
        values = from_grid(y_hat).float()
        mu = from_grid(means).float() if means is not None else None
        likelihood = gc._likelihood(values, from_grid(scales).float(), mu)
        return gc.likelihood_lower_bound(likelihood) if gc.use_likelihood_bound else likelihood

    @staticmethod
    def _to_latent(y_hat_grid: Tensor, like: Tensor) -> Tensor:
        # Grid values are exact in float32 below 2**15 in magnitude (2**24 / 2**8).
        return from_grid(y_hat_grid).to(like.dtype if like.is_floating_point() else torch.float32)

    # -- the exact path ----------------------------------------------------------------------------
    def _side(self, z_hat: Tensor) -> Tensor:
        """``h_s(z_hat)`` in integers: side parameters on the grid, the same bits everywhere."""
        return self.exact_h_s(to_grid(z_hat))

    def _encode_y(self, y: Tensor, side: Tensor) -> tuple[list[list[bytes]], Tensor]:
        """(y strings per stream, y_hat on the grid) for ``y`` coded with side parameters ``side``."""
        scales, means = self._split(side)
        symbols, y_hat = G.quantize(y, means)
        return [G.encode(self.gaussian, symbols, G.scale_indexes(self.gaussian, scales))], y_hat

    def _decode_y(self, strings: list[list[bytes]], shape: tuple[int, ...], side: Tensor) -> Tensor:
        """y_hat on the grid from its strings and the side parameters."""
        scales, means = self._split(side)
        symbols = G.decode(self.gaussian, strings[0], G.scale_indexes(self.gaussian, scales))
        return G.dequantize(symbols, means)

    def _quantize_y(self, y: Tensor, side: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(y_hat, scales, means) on the grid, as :meth:`_encode_y` would code them (no coding)."""
        scales, means = self._split(side)
        return G.quantize(y, means)[1], scales, means

    def _z_hat(self, z: Tensor) -> Tensor:
        """The decoder's z_hat for the encoder's z: ``round(z - median) + median``, as EntropyBottleneck decodes it."""
        eb = self.hyper.entropy_bottleneck
        medians = eb._get_medians().detach()
        return eb.dequantize(eb.quantize(z, "symbols", medians), medians)

    # -- coding ---------------------------------------------------------------------------------------
    def compress(self, y: Tensor) -> dict[str, Any]:
        check_latent(self.label, y, self.channels, self._latent_stride())
        if not self.exact:
            out = super().compress(y)
            out["shape"] = {k: tuple(int(s) for s in v) for k, v in out["shape"].items()}
            return out
        z = self.hyper.h_a(y)
        eb = self.hyper.entropy_bottleneck
        z_strings = G.encode_bottleneck(eb, z)
        y_strings, y_hat = self._encode_y(y, self._side(self._z_hat(z)))
        h, w = (int(s) for s in y.shape[-2:])
        shape = {"y": self._y_shape(h, w), "hyper": tuple(int(s) for s in z.shape[-2:])}
        return {"strings": [*y_strings, z_strings], "shape": shape, "y_hat": self._to_latent(y_hat, y)}

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        strings = check_streams(self.label, strings, self.streams)
        shape = self._file_shape(shape)
        if not self.exact:
            return {"y_hat": super().decompress(strings, shape)["y_hat"]}
        *y_strings, z_strings = strings
        z_hat = G.decode_bottleneck(self.hyper.entropy_bottleneck, z_strings, shape["hyper"])
        y_hat = self._decode_y(y_strings, shape["y"], self._side(z_hat))
        return {"y_hat": self._to_latent(y_hat, z_hat)}

    def _latent_stride(self) -> int:
        """What ``compress`` needs h and w to be multiples of (the codec pads to :attr:`stride`)."""
        return 1

    def extra_repr(self) -> str:
        return f"channels={self.channels}, N={self.N}, hyper_stages={self.hyper_stages}"


__all__ = ["HyperpriorCodec"]
