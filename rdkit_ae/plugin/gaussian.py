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

import torch
from compressai.entropy_models import GaussianConditional
from torch import Tensor

from rdkit_ae.plugin.exact import ACT_BITS

GRID = float(1 << ACT_BITS)


def scale_indexes(gc: GaussianConditional, scales: Tensor) -> Tensor:
    """CDF rows for grid scales: what ``gc.build_indexes`` gives, computed exactly.

    ``build_indexes`` counts the table entries (but the last) that are below
    the scale, after bounding it below by ``scale_bound`` (the table's first
    entry), which ``bucketize`` does in one pass.
    """
    table = gc.scale_table.detach().to(device=scales.device, dtype=torch.float64)
    bound = float(gc.lower_bound_scale.bound)
    values = torch.clamp(scales.double() / GRID, min=bound)
    return torch.bucketize(values, table[:-1].contiguous(), right=False).to(torch.int32)


class _Tables:
    """A Gaussian conditional's CDF tables as the Python lists the rANS coder takes (built once per call)."""

    def __init__(self, gc: GaussianConditional):
        self.coder = gc.entropy_coder
        self.cdf = gc._quantized_cdf.tolist()
        self.lengths = gc._cdf_length.reshape(-1).int().tolist()
        self.offsets = gc._offset.reshape(-1).int().tolist()


def encode(gc: GaussianConditional, symbols: Tensor, indexes: Tensor) -> list[bytes]:
    """One rANS string per image of integer ``symbols`` (B, ...) coded with CDF rows ``indexes``."""
    tables = _Tables(gc)
    sym = symbols.to("cpu", torch.int32).reshape(symbols.size(0), -1)
    idx = indexes.to("cpu", torch.int32).reshape(indexes.size(0), -1)
    return [
        tables.coder.encode_with_indexes(s.tolist(), i.tolist(), tables.cdf, tables.lengths, tables.offsets)
        for s, i in zip(sym, idx)
    ]


def decode(gc: GaussianConditional, strings: Sequence[bytes], indexes: Tensor) -> Tensor:
    """The integer symbols (int32, shape of ``indexes``) of one rANS string per image."""
    tables = _Tables(gc)
    idx = indexes.to("cpu", torch.int32).reshape(indexes.size(0), -1)
    rows = []
    for s, i in zip(strings, idx):
        values = tables.coder.decode_with_indexes(s, i.tolist(), tables.cdf, tables.lengths, tables.offsets)
        rows.append(torch.as_tensor(values, dtype=torch.int32).reshape(-1))
    return torch.stack(rows).reshape(indexes.shape).to(indexes.device)


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


__all__ = ["GRID", "decode", "dequantize", "encode", "quantize", "scale_indexes"]
