"""Coding a latent with CompressAI's GaussianConditional from exact (grid) scales and means.

The CDF of each symbol is chosen by comparing its scale with the scale table:
here the scales are exact dyadic numbers (see :mod:`rdkit_ae.plugin.exact`)
compared in float64 with the float32 table, so every machine picks the same
row. ``y_hat = symbol + mean`` is exact too (a grid integer), which is what
a context model reads back.

Speed: one ``tolist`` per call for the tables, ``torch.bucketize`` instead of
a loop over the table, and the decoded symbols as one array (the guarded
coder returns NumPy), instead of CompressAI's per-call conversions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from torch import Tensor

from rdkit_ae.guards import _GuardedCoder
from rdkit_ae.plugin.exact import ACT_BITS

GRID = float(1 << ACT_BITS)


MAX_LOOKUP = 1 << 18  # grid scales up to 1024 (CompressAI's table ends at 256) get a lookup table


def scale_indexes(gc: GaussianConditional, scales: Tensor) -> Tensor:
    """CDF rows for grid scales: what ``gc.build_indexes`` gives, computed exactly.

    ``build_indexes`` counts the table entries (but the last) that are below
    the scale, after bounding it below by ``scale_bound`` (the table's first
    entry), which ``bucketize`` does in one pass. Integer grid scales (what
    the exact networks give) look the answer up instead: one ``bucketize``
    of every grid value up to the table's end, made once per table.
    """
    table = gc.scale_table.detach().to(device=scales.device, dtype=torch.float64)
    bound = float(gc.lower_bound_scale.bound)
    lookup = _lookup(gc, table, bound)
    if lookup is not None and (not scales.is_floating_point() or torch.equal(scales, scales.floor())):
        return torch.take(lookup, scales.clamp(0, lookup.numel() - 1).long())
    values = torch.clamp(scales.double() / GRID, min=bound)
    return torch.bucketize(values, table[:-1].contiguous(), right=False).to(torch.int32)


def _lookup(gc: GaussianConditional, table: Tensor, bound: float) -> Tensor | None:
    """The rows of grid scales ``0..L`` (``L / GRID`` above every table entry but the last), cached; None if too long.

    A negative scale is bounded up to ``bound`` as 0 is (``bound > 0``), and one of ``L`` or more
    lies above every entry, as ``L`` does: clamping into ``0..L`` keeps every answer.
    """
    if not bound > 0 or table.numel() < 2 or not float(table[-2]) * GRID < MAX_LOOKUP:
        return None
    key = (gc.scale_table, gc.scale_table._version, bound, table.device)
    cached = getattr(gc, "_rdkit_lookup", None)
    if cached is not None and cached[0][0] is key[0] and cached[0][1:] == key[1:]:
        return cached[1]
    grid = torch.arange(int(float(table[-2]) * GRID) + 2, dtype=torch.float64, device=table.device)
    values = torch.clamp(grid / GRID, min=bound)
    lookup = torch.bucketize(values, table[:-1].contiguous(), right=False).to(torch.int32)
    gc._rdkit_lookup = (key, lookup)  # a plain attribute, not a buffer
    return lookup


class _Tables:
    """An entropy model's CDF tables as the Python lists the rANS coder takes (converted once, until they change)."""

    def __init__(self, model: EntropyModel):
        self.coder = model.entropy_coder
        self.guarded = isinstance(self.coder, _GuardedCoder)
        tensors = (model._quantized_cdf, model._cdf_length, model._offset)
        versions = tuple(t._version for t in tensors)
        cached = getattr(model, "_rdkit_tables", None)
        # Held tensors are compared by identity (held, so never a recycled id) and in-place version.
        if cached is None or any(a is not b for a, b in zip(cached[0], tensors)) or cached[1] != versions:
            lists = (tensors[0].tolist(), tensors[1].reshape(-1).int().tolist(), tensors[2].reshape(-1).int().tolist())
            cached = (tensors, versions, lists)
            model._rdkit_tables = cached  # a plain attribute, not a buffer
        self.cdf, self.lengths, self.offsets = cached[2]

    def rows(self, values: Tensor) -> np.ndarray | list:
        """One image's values as the coder takes them: an int32 array for the guarded coder (which checks
        arrays without a conversion and hands the C++ coder a list), else a list."""
        flat = values.reshape(-1).numpy()
        return flat if self.guarded else flat.tolist()


def encode(gc: EntropyModel, symbols: Tensor, indexes: Tensor) -> list[bytes]:
    """One rANS string per image of integer ``symbols`` (B, ...) coded with CDF rows ``indexes``."""
    tables = _Tables(gc)
    sym = symbols.to("cpu", torch.int32).reshape(symbols.size(0), -1)
    idx = indexes.to("cpu", torch.int32).reshape(indexes.size(0), -1)
    return [
        tables.coder.encode_with_indexes(tables.rows(s), tables.rows(i), tables.cdf, tables.lengths, tables.offsets)
        for s, i in zip(sym, idx)
    ]


def decode(gc: EntropyModel, strings: Sequence[bytes], indexes: Tensor) -> Tensor:
    """The integer symbols (int32, shape of ``indexes``) of one rANS string per image."""
    tables = _Tables(gc)
    idx = indexes.to("cpu", torch.int32).reshape(indexes.size(0), -1)
    rows = []
    for s, i in zip(strings, idx):
        values = tables.coder.decode_with_indexes(s, i.numpy().tolist(), tables.cdf, tables.lengths, tables.offsets)
        rows.append(torch.as_tensor(np.asarray(values, dtype=np.int32)).reshape(-1))
    return torch.stack(rows).reshape(indexes.shape).to(indexes.device)


def encode_bottleneck(eb: EntropyBottleneck, z: Tensor) -> list[bytes]:
    """``eb.compress(z)`` (the same symbols, CDF rows and bytes) through :func:`encode`'s cached tables."""
    medians = eb._get_medians().detach()
    symbols = eb.quantize(z, "symbols", medians)
    channels = torch.arange(z.size(1), dtype=torch.int32).view(1, -1, *([1] * (z.dim() - 2)))
    return encode(eb, symbols, channels.expand(z.shape))


def decode_bottleneck(eb: EntropyBottleneck, strings: Sequence[bytes], size: tuple[int, ...]) -> Tensor:
    """``eb.decompress(strings, size)``: symbols decoded through :func:`decode`, plus the medians, in float32."""
    shape = (len(strings), eb._quantized_cdf.size(0), *size)
    channels = torch.arange(shape[1], dtype=torch.int32).view(1, -1, *([1] * len(size)))
    medians = eb._get_medians().detach()
    symbols = decode(eb, strings, channels.expand(shape).to(eb._quantized_cdf.device))
    return eb.dequantize(symbols, medians, medians.dtype)


def quantize(y: Tensor, means: Tensor | None) -> tuple[Tensor, Tensor]:
    """Encoder side: ``(symbols, y_hat_grid)`` for ``y`` around grid ``means`` (None: zero means).

    ``symbols = round(y - mean)``; ``y_hat_grid = symbols * GRID + means`` is
    the decoded latent on the grid, exactly what :func:`dequantize` gives the decoder.
    """
    centre = y.double() if means is None else y.double() - means / GRID
    symbols = torch.round(centre)
    return symbols, dequantize(symbols, means)


def dequantize(symbols: Tensor, means: Tensor | None) -> Tensor:
    """Decoder side: grid values of ``symbol + mean`` (float64 integers, exact)."""
    grid = symbols.double() * GRID
    return grid if means is None else grid + means


__all__ = [
    "GRID",
    "decode",
    "decode_bottleneck",
    "dequantize",
    "encode",
    "encode_bottleneck",
    "quantize",
    "scale_indexes",
]
