"""The entropy decoding of an ONNX export in NumPy: CompressAI's rANS decoder, the tables, exact index selection.

Every value that chooses a CDF is computed here exactly as the torch path
computes it (:mod:`rdkit_ae.plugin.gaussian`, CompressAI's EntropyBottleneck):

- ``z_hat = float32(symbol) + median`` (float32), then the grid
  ``round(z_hat * 2**8)`` (float64, halves to even as ``torch.round``);
- a scale's CDF row: ``#(table[:-1] < max(scale_grid / 2**8, bound))`` in
  float64 (``torch.bucketize(..., right=False)`` is ``searchsorted`` left);
- ``y_hat_grid = symbol * 2**8 + mean_grid`` (float64, exact).

The rANS decoder is CompressAI's, behind :mod:`rdkit_ae.guards`' wrapper:
strings are zero-padded against over-reads, and every decoded symbol goes
into the :class:`~rdkit_ae.guards.SymbolLedger` whose digest a version 3/4
file's checksum covers.
"""

from __future__ import annotations

import math

import numpy as np

from rdkit_ae.guards import SymbolLedger
from rdkit_ae.guards import _GuardedCoder as GuardedCoder  # the codec's own guard, reused as it is
from rdkit_ae.interop.onnx.tables import RATE_GRID
from rdkit_ae.plugin.exact import ACT_BITS, ACT_LIMIT

GRID = float(1 << ACT_BITS)


class _Table:
    """One entropy model's CDF tables as the Python lists the rANS decoder takes (built once)."""

    def __init__(self, tables: dict[str, np.ndarray], prefix: str):
        self.cdf = tables[f"{prefix}_cdf"].tolist()
        self.lengths = tables[f"{prefix}_cdf_length"].tolist()
        self.offsets = tables[f"{prefix}_offset"].tolist()


class EntropyDecoder:
    """Decodes rANS strings of ``y`` and ``z`` with the export's tables; ``ledger`` digests every symbol."""

    def __init__(self, tables: dict[str, np.ndarray]):
        from compressai.ans import RansDecoder

        self.y, self.z = _Table(tables, "y"), _Table(tables, "z")
        self.medians = tables["z_medians"].astype(np.float32)
        self.scale_table = tables["y_scale_table"].astype(np.float64)
        self.scale_bound = float(tables["y_scale_bound"][0])
        self.coder = GuardedCoder(RansDecoder())
        self.ledger = SymbolLedger("decode")

    def reset(self) -> SymbolLedger:
        self.ledger = SymbolLedger("decode")
        self.coder.ledger = self.ledger
        return self.ledger

    def _decode(self, table: _Table, string: bytes, indexes: np.ndarray) -> np.ndarray:
        flat = indexes.reshape(-1).astype(np.int32).tolist()
        values = self.coder.decode_with_indexes(string, flat, table.cdf, table.lengths, table.offsets)
        return np.asarray(values, dtype=np.int32).reshape(indexes.shape)

    def z_hat(self, string: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(symbols, z_hat float32) of the hyper-latent: one CDF per channel, ``symbol + median``."""
        n = len(self.medians)
        indexes = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None, None], (1, n, *shape))
        symbols = self._decode(self.z, string, indexes)
        return symbols, symbols.astype(np.float32) + self.medians[None, :, None, None]

    def scale_indexes(self, scales_grid: np.ndarray) -> np.ndarray:
        values = np.maximum(scales_grid.astype(np.float64) / GRID, self.scale_bound)
        return np.searchsorted(self.scale_table[:-1], values, side="left").astype(np.int32)

    def y_grid(self, string: bytes, scales_grid: np.ndarray, means_grid: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """(symbols, y_hat on the grid) of one Gaussian-coded string with these grid scales and means."""
        symbols = self._decode(self.y, string, self.scale_indexes(scales_grid))
        grid = symbols.astype(np.float64) * GRID
        return symbols, grid if means_grid is None else grid + means_grid


def to_grid(x: np.ndarray) -> np.ndarray:
    """Float values to grid integers (float64), as :func:`rdkit_ae.plugin.exact.to_grid`."""
    return np.clip(np.round(x.astype(np.float64) * GRID), -ACT_LIMIT, ACT_LIMIT)


def to_latent(grid: np.ndarray) -> np.ndarray:
    """Grid integers to the float32 latent (exact below 2**15 in magnitude)."""
    return (grid / GRID).astype(np.float32)


def inverse_gain(tables: dict[str, np.ndarray], rate: float) -> np.ndarray:
    """The (M,) float32 inverse gain at rate position ``rate``.

    Quarter positions (all ``--rate`` points, one byte in a file) come from
    the table torch computed at export, bit for bit; others are interpolated
    as ``GainQuantizer.gains`` does, in float32 (NumPy's ``exp`` may differ
    from torch's in the last bit: pixels within one level).
    """
    grid = rate * RATE_GRID
    if grid.is_integer():
        return tables["gain_inverse_grid"][int(grid)]
    log = tables["gain_log_inverse"]
    k = len(log)
    t = np.float32(rate)
    i = min(int(math.floor(rate)), k - 2)
    f = np.float32(t - np.float32(i))
    mixed = (np.float32(1) - f) * log[i] + f * log[i + 1]
    return np.exp(mixed.astype(np.float32)).astype(np.float32)


# -- the checkerboard's halves (CompressAI's CheckerboardLatentCodec.unembed/embed, anchors on even parity) --
def unembed(x: np.ndarray) -> np.ndarray:
    """(n, c, h, w) -> (2, n, c, h, w // 2): anchors (``i + j`` even), then the rest, each packed by rows."""
    n, c, h, w = x.shape
    out = np.zeros((2, n, c, h, w // 2), dtype=x.dtype)
    out[0, ..., 0::2, :] = x[..., 0::2, 0::2]
    out[0, ..., 1::2, :] = x[..., 1::2, 1::2]
    out[1, ..., 0::2, :] = x[..., 0::2, 1::2]
    out[1, ..., 1::2, :] = x[..., 1::2, 0::2]
    return out


def embed(halves: np.ndarray) -> np.ndarray:
    """The inverse of :func:`unembed`."""
    _, n, c, h, w_half = halves.shape
    out = np.zeros((n, c, h, 2 * w_half), dtype=halves.dtype)
    out[..., 0::2, 0::2] = halves[0, ..., 0::2, :]
    out[..., 1::2, 1::2] = halves[0, ..., 1::2, :]
    out[..., 0::2, 1::2] = halves[1, ..., 0::2, :]
    out[..., 1::2, 0::2] = halves[1, ..., 1::2, :]
    return out


__all__ = ["EntropyDecoder", "embed", "inverse_gain", "to_grid", "to_latent", "unembed"]
