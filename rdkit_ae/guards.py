"""Protections against crafted input: checks on a loaded model, and a guarded rANS coder.

CompressAI's rANS coder (C++) does no bounds checking. A checkpoint is
untrusted input, so :func:`check_model` refuses entropy tables that would make
the coder misbehave; :func:`rdkit_ae.checkpoint.load_model` applies it and
:func:`guard_entropy_coders` to every model it loads, so every path that codes
with a loaded checkpoint (the CLI, the bench, the Python API) is guarded.
The guarded coders refuse, when encoding, latents that would overflow the
coder's output buffer (or hang it on NaN), and hand the decoder a zero-padded
copy of each string, long enough that a corrupt string cannot make it read
past its buffer.
"""

from __future__ import annotations

import array
import contextlib
import zlib
from typing import Any, Iterator

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional

from rdkit_ae.errors import CheckpointError, FormatError, RdkitError


# -- checks on a loaded model ----------------------------------------------------
def check_model(model, where: str = "model") -> None:
    """Refuse a model whose entropy tables or weights would make the C++ coder misbehave.

    CompressAI's coder indexes its CDF tables without bounds checks and divides
    by symbol frequencies, so the tables must be well formed (first 0, last
    2**16, strictly increasing, one row per channel or scale) before any coding.
    """
    check_finite_weights(model, where)
    for name, m in model.named_modules():
        if isinstance(m, EntropyModel):
            _check_cdf_tables(m, f"{where}: entropy model '{name}'")


def check_finite_weights(model, where: str = "model") -> None:
    """Refuse NaN or infinite weights: they would make NaN latents (and, unguarded, hang the rANS encoder)."""
    for name, p in model.state_dict().items():
        if isinstance(p, torch.Tensor) and p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise CheckpointError(f"{where}: tensor '{name}' holds NaN or infinite values")


def _check_cdf_tables(m: EntropyModel, label: str) -> None:
    cdf, lengths, offsets = (t.detach().cpu() for t in (m._quantized_cdf, m._cdf_length, m._offset))
    if cdf.numel() == 0:
        raise CheckpointError(f"{label} has no CDF tables (run model.update() before saving)")
    ranks_ok = cdf.dim() == 2 and lengths.dim() == 1 and offsets.dim() == 1
    if not ranks_ok or not (cdf.size(0) == lengths.numel() == offsets.numel()):
        shapes = f"{tuple(cdf.shape)}, {tuple(lengths.shape)}, {tuple(offsets.shape)}"
        raise CheckpointError(f"{label}: CDF tables of inconsistent shapes {shapes}")
    rows, cols = cdf.shape
    lengths64, cdf64 = lengths.to(torch.int64), cdf.to(torch.int64)
    if bool(((lengths64 < 3) | (lengths64 > cols)).any()):
        raise CheckpointError(f"{label}: CDF lengths outside 3..{cols}")
    if bool((offsets.to(torch.int64).abs() > (1 << 24)).any()):
        raise CheckpointError(f"{label}: CDF offsets out of range")
    precision = 1 << int(getattr(m, "entropy_coder_precision", 16))
    inside = torch.arange(cols)[None, :] < lengths64[:, None]
    last = cdf64.gather(1, (lengths64 - 1)[:, None]).squeeze(1)
    steps = cdf64[:, 1:] - cdf64[:, :-1]
    if bool((cdf64[:, 0] != 0).any()) or bool((last != precision).any()) or bool(((steps <= 0) & inside[:, 1:]).any()):
        raise CheckpointError(f"{label}: CDF tables are not valid (must rise strictly from 0 to {precision})")
    if isinstance(m, EntropyBottleneck) and rows != m.quantiles.size(0):
        raise CheckpointError(f"{label}: {rows} CDF rows for {m.quantiles.size(0)} channels")
    if isinstance(m, GaussianConditional):
        table = m.scale_table.detach().cpu()
        if table.dim() != 1 or table.numel() != rows or not bool((table > 0).all()):
            raise CheckpointError(f"{label}: scale table does not match its {rows} CDF rows")


# -- guarded entropy coder -------------------------------------------------------
class SymbolLedger:
    """A running check of every symbol an entropy coder codes: what the encoder wrote, what a decoder read.

    Each coder call adds the CRC-32 of its symbols (little-endian int32);
    the digest is their sum modulo 2**32, so it does not depend on the order
    in which a model codes its streams. Equal digests on both sides mean the
    decoder recovered the encoder's symbols (see docs/format.md, version 3).
    """

    def __init__(self, side: str) -> None:
        self.side = side  # "encode" or "decode": a compress that decodes its own strings counts them once
        self.digest = 0

    def add(self, symbols: np.ndarray) -> None:
        data = np.ascontiguousarray(symbols, dtype="<i4").tobytes()
        self.digest = (self.digest + zlib.crc32(data)) & 0xFFFFFFFF


class _GuardedCoder:
    """Wraps CompressAI's ``_EntropyCoder``: refuses what would crash or hang it, pads what it reads.

    Decoded symbols are returned as one int32 NumPy array (CompressAI turns
    them into a tensor; from an array that is a copy, from a list a slow
    conversion), and added to the active :class:`SymbolLedger`, if any.
    """

    def __init__(self, inner):
        self.inner = inner
        self.name = getattr(inner, "name", "ans")
        self.ledger: SymbolLedger | None = None

    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_lengths, offsets):
        sym = _check_encodable(symbols, indexes, cdf_lengths, offsets)
        if self.ledger is not None and self.ledger.side == "encode":
            self.ledger.add(sym)
        # Arrays (which the check reads without a conversion) go to the C++ coder as the lists it takes.
        symbols, indexes = (v.tolist() if isinstance(v, np.ndarray) else v for v in (symbols, indexes))
        return self.inner.encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_lengths, offsets):
        string = bytes(string)
        # CompressAI's rANS output is whole 32-bit words, at least the 2-word final state.
        if len(string) < 8 or len(string) % 4:
            raise FormatError(
                f"corrupt data: an entropy-coded stream of {len(string)} bytes (expected a multiple of 4, at least 8)"
            )
        values = self.inner.decode_with_indexes(
            string + bytes(_pad_bytes(len(indexes), len(string))), indexes, cdfs, cdf_lengths, offsets
        )
        symbols = np.frombuffer(array.array("i", values), dtype=np.int32)  # faster than np.asarray(list)
        if self.ledger is not None and self.ledger.side == "decode":
            self.ledger.add(symbols)
        return symbols

    def __getattr__(self, name: str) -> Any:  # _encoder, _decoder, ...
        return getattr(self.inner, name)


def _pad_bytes(n_symbols: int, n_bytes: int) -> int:
    """Zero bytes appended to a string before decoding so that a corrupt one cannot be over-read.

    The decoder reads one 32-bit word per symbol at most once the real data
    is exhausted (its state then keeps zero low bits), plus escape ("bypass")
    reads that the data's own bits can request: at most about 15 words per
    word of data. Valid strings read none of the padding.
    """
    return 4 * (2 * n_symbols + 16 * (n_bytes // 4) + 1024)


_HUGE = (
    "the latent holds NaN, infinite or huge values that the entropy coder cannot code "  # noqa: ISC003 - one message
    + "(is the model trained and finite?)"
)


def _check_encodable(symbols, indexes, cdf_lengths, offsets) -> np.ndarray:
    """Refuse symbols that would hang the rANS encoder or overflow its output buffer.

    The encoder writes into a buffer of one 32-bit word per symbol: each
    symbol costs at most 16 bits, plus 4 bits per escape nibble when out of
    its table's range, plus 64 bits of final state; a NaN latent becomes
    INT_MIN, whose escape loop never ends.
    """
    n = len(symbols)
    sym = np.asarray(symbols)
    if sym.dtype != np.int32:  # a list (or wider ints): what does not fit in int32 is "huge" below
        wide = np.asarray(symbols, dtype=np.int64)
        if wide.size and bool((np.abs(wide) >= (1 << 30)).any()):
            raise RdkitError(_HUGE)
        sym = wide.astype(np.int32)
    idx = np.asarray(indexes, dtype=np.int64)
    lengths = np.asarray(cdf_lengths, dtype=np.int64)
    offs = np.asarray(offsets, dtype=np.int64)
    if idx.shape != sym.shape or (n and (idx.min() < 0 or idx.max() >= len(lengths))):
        raise RdkitError("internal error: entropy coder indexes out of range")
    # Escapes (symbols outside their table) in int32 over all symbols, then the rest on the few escaped ones.
    escape = (sym < offs[idx]) | (sym >= (offs + lengths - 2)[idx])
    value = sym[escape].astype(np.int64) - offs[idx[escape]]
    max_value = lengths[idx[escape]] - 2
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - max_value))
    if bool((raw >= (1 << 30)).any()):
        raise RdkitError(_HUGE)
    r = raw
    nibbles = np.zeros_like(r)
    while r.size and bool((r > 0).any()):
        nibbles += r > 0
        r = r >> 4
    bits = 16 * n + int((4 * (nibbles + nibbles // 15 + 1)).sum()) + 64 + 32
    if bits > 32 * n:
        raise RdkitError(
            f"the latent needs up to {bits} bits for {n} symbols, more than the entropy coder's buffer "
            f"({32 * n} bits); its values are far outside the trained range"
        )
    return sym


@contextlib.contextmanager
def symbol_ledger(model, side: str) -> Iterator[SymbolLedger]:
    """Digest every symbol that ``model``'s (guarded) entropy coders encode (or decode: ``side``) inside the block."""
    guard_entropy_coders(model)
    coders = [m.entropy_coder for m in model.modules() if isinstance(m, EntropyModel)]
    ledger = SymbolLedger(side)
    for coder in coders:
        coder.ledger = ledger
    try:
        yield ledger
    finally:
        for coder in coders:
            coder.ledger = None


def guard_entropy_coders(model) -> None:
    """Wrap every CompressAI entropy coder of ``model`` (idempotent; see the module docstring)."""
    for m in model.modules():
        if isinstance(m, EntropyModel) and not isinstance(m.entropy_coder, _GuardedCoder):
            m.entropy_coder = _GuardedCoder(m.entropy_coder)
