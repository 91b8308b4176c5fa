"""The ``.rdk`` container: one compressed image as bytes (see docs/format.md).

Layout (all varints are unsigned LEB128, minimal length)::

    "RK"  version(1)  model_id(4)  [rate]  H  W  n_streams  len_0 .. len_{n-2}
    stream_0 .. stream_{n-1}  crc32(4, big-endian, over everything before it)

Version 1 files (fixed-rate models) have no ``rate``; version 2 files (a
variable-rate model) store its rate position ``t`` as one varint (see
:func:`rate_code`), so the decoder codes at the operating point of the encoder.
Versions 3 and 4 are versions 1 and 2 with **checked symbols**: their CRC-32
runs on over a 4-byte digest of every symbol the entropy coders coded (see
:class:`rdkit_ae.guards.SymbolLedger`), which the file does not store. The
decoder can only verify it after decoding, and a mismatch means the file is
damaged or this machine decoded other symbols than the encoder wrote: never a
silently wrong image, at no cost in bytes.

The last stream's length is implicit (what remains before the checksum).
Latent shapes are not stored: they follow from H, W and the model (the codec
derives them and checks them against what the quantizer produced), so storing
them would only add bytes that must be validated against the same derivation.

This module knows nothing about models. Parsing is explicit and bounded: every
declared size is checked against the limits below and the bytes that remain
before anything is sliced, and any defect raises :class:`FormatError`.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rdkit_ae.errors import FormatError

MAGIC = b"RK"
VERSION = 1  # fixed-rate models: no rate field (every file written before variable rate)
VERSION_RATE = 2  # a variable-rate model: the rate position follows the model id
VERSION_CHECKED = 3  # version 1 + checked symbols
VERSION_CHECKED_RATE = 4  # version 2 + checked symbols
VERSIONS = (VERSION, VERSION_RATE, VERSION_CHECKED, VERSION_CHECKED_RATE)
RATE_VERSIONS = (VERSION_RATE, VERSION_CHECKED_RATE)
CHECKED_VERSIONS = (VERSION_CHECKED, VERSION_CHECKED_RATE)
# Rate positions on this grid (integer, half and quarter indices) are stored as 2 * t * RATE_GRID,
# one byte below t = 16; any other float32 as 2 * bits + 1 (five bytes).
RATE_GRID = 4
MAX_RATE = 255.0  # bound of the field; the codec checks a model's own range
ID_BYTES = 4
CRC_BYTES = 4
MAX_SIDE = 65535
MAX_PIXELS = 1 << 26  # 67 MP (8192 x 8192): decoding needs memory in proportion
MAX_STREAMS = 8
# Decompression bombs: without an explicit --max-pixels, a file may claim at most
# PIXELS_PER_BYTE pixels per byte of coded data (FREE_PIXELS whatever its size),
# so a crafted file of under 1 KB cannot make a decoder run over more than
# 512 x 512 pixels (about a second and 100 MB with the zoo models). Real files
# stay far below the ratio: 256 pixels per byte is 0.031 bpp.
PIXELS_PER_BYTE = 256
FREE_PIXELS = 1 << 18
MAX_VARINT_BYTES = 5  # enough for any value a file of < 32 GiB can hold
SUFFIX = ".rdk"
# magic + version + id + H + W + n_streams (1 byte each at least) + crc
MIN_SIZE = len(MAGIC) + 1 + ID_BYTES + 3 + CRC_BYTES


@dataclass(frozen=True)
class Layout:
    """What a model's quantizer produces for an image of a given size: latent ``shape`` and stream count."""

    shape: Any
    streams: int


@dataclass(frozen=True)
class Packed:
    """A parsed ``.rdk`` file.

    ``strings`` is ``[stream][image]`` with one image, ready for
    ``model.decompress(strings, shape, size)``; ``shape`` is filled only when
    :func:`unpack` is given a ``layout`` (it is derived, not stored).
    """

    model_id: bytes
    size: tuple[int, int]
    strings: list[list[bytes]]
    shape: Any = None
    version: int = VERSION
    header_bytes: int = field(default=0, compare=False)
    rate: float | None = None  # a variable-rate model's rate position (version 2), a float32 value
    # Versions 3/4: the CRC-32 of the bytes before the checksum, and the stored checksum (verified after decoding).
    body_crc: int = field(default=0, compare=False)
    stored_crc: int = field(default=0, compare=False)

    @property
    def checked(self) -> bool:
        """Whether the file carries a check of its decoded symbols (versions 3 and 4)."""
        return self.version in CHECKED_VERSIONS

    def check_symbols(self, digest: int) -> None:
        """Raise :class:`FormatError` unless ``digest`` (of the decoded symbols) is the one the encoder wrote."""
        if self.checked and symbols_crc(self.body_crc, digest) != self.stored_crc:
            raise FormatError(
                "checksum mismatch after decoding: the file is damaged or truncated, or this machine decoded other "
                "symbols than the encoder wrote (a model whose entropy path is not portable; see "
                "docs/format.md#determinism)"
            )

    @property
    def payload_bytes(self) -> int:
        return sum(len(s[0]) for s in self.strings)


# -- varints ---------------------------------------------------------------
def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode one minimal LEB128 varint from ``data[pos:end]``; return (value, new pos)."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise FormatError(f"truncated file: it ends inside the {what} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            # A zero final byte after others is an overlong encoding: one value, one spelling.
            if byte == 0 and i > 0:
                raise FormatError(f"corrupt file: overlong encoding of the {what} field")
            return value, pos + i + 1
    raise FormatError(f"corrupt file: the {what} field is longer than {MAX_VARINT_BYTES} bytes")


# -- the rate position ------------------------------------------------------------
def rate_value(rate: float) -> float:
    """``rate`` as the float32 it is stored as (the gains are computed in float32 from it)."""
    ok = not isinstance(rate, bool) and isinstance(rate, (int, float)) and math.isfinite(rate)
    if not (ok and 0 <= rate <= MAX_RATE and math.copysign(1.0, rate) > 0):
        raise FormatError(f"a rate position must be a finite number in 0..{MAX_RATE:g}, got {rate!r}")
    return float(struct.unpack(">f", struct.pack(">f", float(rate)))[0])


def rate_code(rate: float) -> int:
    """The varint value that stores a rate position: one spelling per float32 value.

    ``2 * k`` when ``t = k / RATE_GRID`` exactly (so integer and half indices
    cost one byte up to 15), else ``2 * float32_bits(t) + 1``.
    """
    value = rate_value(rate)
    grid = value * RATE_GRID
    if grid.is_integer():
        return 2 * int(grid)
    return 2 * int.from_bytes(struct.pack(">f", value), "big") + 1


def _rate_from_code(code: int) -> float:
    if not code & 1:
        value = (code >> 1) / RATE_GRID
    else:
        bits = code >> 1
        if bits >= 1 << 32:
            raise FormatError("corrupt file: the rate field is not a float32")
        value = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
    if not (math.isfinite(value) and 0.0 <= value <= MAX_RATE and math.copysign(1.0, value) > 0):
        raise FormatError(f"corrupt file: rate position {value!r} is outside 0..{MAX_RATE:g}")
    if rate_code(value) != code:  # e.g. -0.0, or a grid value spelled as float bits
        raise FormatError("corrupt file: non-canonical encoding of the rate field")
    return value


# -- packing ------------------------------------------------------------------
def symbols_crc(body_crc: int, digest: int) -> int:
    """The stored checksum of a version 3/4 file: its bytes' CRC-32 continued over the symbol digest."""
    return zlib.crc32(int(digest).to_bytes(4, "big"), body_crc)


def check_size(height: int, width: int, max_pixels: int) -> None:
    """Refuse an image size outside 1..MAX_SIDE per side or above ``max_pixels``."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise FormatError(f"image size {height}x{width} is outside 1..{MAX_SIDE} per side")
    if height * width > max_pixels:
        raise FormatError(
            f"image of {height}x{width} = {height * width:,} pixels is above the limit of {max_pixels:,} "
            "(raise it with --max-pixels if this file is trusted)"
        )


def claim_allowed(height: int, width: int, payload_bytes: int, pixels_per_byte: int | None = PIXELS_PER_BYTE) -> bool:
    """Whether a file of ``payload_bytes`` coded bytes may claim ``height`` x ``width`` pixels (None: any)."""
    return pixels_per_byte is None or height * width <= max(FREE_PIXELS, pixels_per_byte * payload_bytes)


def check_claim(height: int, width: int, payload_bytes: int, pixels_per_byte: int | None = PIXELS_PER_BYTE) -> None:
    """Refuse a file that claims far more pixels than its coded bytes can describe (a decompression bomb)."""
    if not claim_allowed(height, width, payload_bytes, pixels_per_byte):
        pixels = height * width
        raise FormatError(
            f"refused: the file claims {height}x{width} = {pixels:,} pixels from {payload_bytes:,} bytes of coded "
            f"data, more than {pixels_per_byte} pixels per byte (decoding a crafted file would take minutes and "
            f"gigabytes); if the file is trusted, decode it with --max-pixels {pixels}"
        )


def pack(
    model_id: bytes,
    compressed: dict[str, Any],
    index: int = 0,
    *,
    max_pixels: int = MAX_PIXELS,
    rate: float | None = None,
    symbols: int | None = None,
) -> bytes:
    """The ``.rdk`` bytes of image ``index`` of an ``RDModel.compress`` output.

    ``compressed`` is ``{"strings": [stream][image] bytes, "size": (H, W), ...}``;
    the latent ``shape`` is not stored (the decoder derives it from H, W).
    ``rate``: a variable-rate model's rate position (a version 2 file); None
    for a fixed-rate model (version 1, byte for byte as before).
    ``symbols``: the digest of the image's coded symbols
    (:class:`rdkit_ae.guards.SymbolLedger`): a version 3 (or 4, with a rate)
    file of the same size, whose checksum covers it.
    """
    model_id = bytes(model_id)
    if len(model_id) != ID_BYTES:
        raise ValueError(f"model id must be {ID_BYTES} bytes, got {len(model_id)}")
    height, width = (int(v) for v in compressed["size"])
    check_size(height, width, max_pixels)
    streams: Sequence[Sequence[bytes]] = compressed["strings"]
    if not 1 <= len(streams) <= MAX_STREAMS:
        raise FormatError(f"a quantizer with {len(streams)} streams cannot be stored (1..{MAX_STREAMS})")
    strings = [bytes(stream[index]) for stream in streams]
    head = bytearray(MAGIC)
    if symbols is None:
        head.append(VERSION if rate is None else VERSION_RATE)
    else:
        head.append(VERSION_CHECKED if rate is None else VERSION_CHECKED_RATE)
    head += model_id
    if rate is not None:
        head += _varint(rate_code(rate))
    head += _varint(height) + _varint(width) + _varint(len(strings))
    for s in strings[:-1]:
        head += _varint(len(s))
    body = bytes(head) + b"".join(strings)
    crc = zlib.crc32(body) if symbols is None else symbols_crc(zlib.crc32(body), symbols)
    return body + crc.to_bytes(CRC_BYTES, "big")


# -- unpacking -----------------------------------------------------------------
def unpack(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    layout: Callable[[int, int], Layout] | None = None,
    pixels_per_byte: int | None = PIXELS_PER_BYTE,
) -> Packed:
    """Parse and check ``.rdk`` bytes; raise :class:`FormatError` on any defect.

    A file claiming more pixels than ``pixels_per_byte`` per byte of coded
    data (at least :data:`FREE_PIXELS`) is refused as a decompression bomb;
    pass None for a file that is trusted (see :func:`check_claim`).

    With ``layout`` (``(height, width) -> Layout``, e.g. the model's
    ``rdkit_ae.codec.latent_layout``), the stream count is checked against it
    and the latent ``shape`` filled in, so the result is ready for
    ``model.decompress(p.strings, p.shape, p.size)``; the model id is *not*
    checked here (``rdkit_ae.codec.decompress_bytes`` does).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    version, model_id, rate, pos = _read_head(data)
    end = len(data) - CRC_BYTES  # the payload stops before the checksum

    height, pos = _read_varint(data, pos, end, "height")
    width, pos = _read_varint(data, pos, end, "width")
    check_size(height, width, max_pixels)
    count, pos = _read_varint(data, pos, end, "stream count")
    if not 1 <= count <= MAX_STREAMS:
        raise FormatError(f"corrupt file: {count} streams declared (1..{MAX_STREAMS} allowed)")
    lengths = []
    for i in range(count - 1):
        length, pos = _read_varint(data, pos, end, f"length of stream {i}")
        lengths.append(length)
    header_end = pos
    remaining = end - pos
    if sum(lengths) > remaining:
        raise FormatError(
            f"truncated or corrupt file: streams declare {sum(lengths):,} bytes but only {remaining:,} remain"
        )
    lengths.append(remaining - sum(lengths))
    check_claim(height, width, remaining, pixels_per_byte)

    stored_crc = int.from_bytes(data[end:], "big")
    body_crc = zlib.crc32(data[:end])
    if version not in CHECKED_VERSIONS and body_crc != stored_crc:
        raise FormatError("corrupt or truncated file: checksum mismatch")

    strings: list[list[bytes]] = []
    for length in lengths:
        strings.append([data[pos : pos + length]])
        pos += length
    shape = None
    if layout is not None:
        expected = layout(height, width)
        check_stream_count(len(strings), expected)
        shape = expected.shape
    return Packed(
        model_id, (height, width), strings, shape, version, header_end + CRC_BYTES, rate, body_crc, stored_crc
    )


def _read_head(data: bytes) -> tuple[int, bytes, float | None, int]:
    """Magic, version, model id and (version 2) rate position: (version, id, rate, position after them)."""
    n = len(data)
    if n == 0:
        raise FormatError("empty file: not an .rdk file")
    if data[: len(MAGIC)] != MAGIC[:n]:
        raise FormatError(
            f"not an .rdk file (starts with {data[: len(MAGIC)].hex()}, expected {MAGIC.hex()} '{MAGIC.decode()}')"
        )
    if n < MIN_SIZE:
        raise FormatError(f"truncated file: {n} bytes, an .rdk file has at least {MIN_SIZE}")
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise FormatError(
            f"unsupported .rdk version {version} (this rdkit-ae reads versions {', '.join(map(str, VERSIONS))})"
        )
    pos = len(MAGIC) + 1 + ID_BYTES
    rate = None
    if version in RATE_VERSIONS:
        code, pos = _read_varint(data, pos, n - CRC_BYTES, "rate")
        rate = _rate_from_code(code)
    return version, data[len(MAGIC) + 1 : len(MAGIC) + 1 + ID_BYTES], rate, pos


def check_stream_count(count: int, layout: Layout) -> None:
    """Refuse a file whose stream count is not the one the model codes."""
    if count != layout.streams:
        raise FormatError(f"corrupt file: {count} streams, the model codes {layout.streams}")


def header_size(data: bytes, *, max_pixels: int = MAX_PIXELS) -> int:
    """Bytes of ``data`` beyond the quantizer's strings (header + checksum)."""
    return unpack(data, max_pixels=max_pixels, pixels_per_byte=None).header_bytes


def overhead(height: int, width: int, stream_lengths: Sequence[int], rate: float | None = None) -> int:
    """Container bytes for an image of this size and these stream lengths (and rate position), without packing."""
    varints = _varint(height) + _varint(width) + _varint(len(stream_lengths))
    if rate is not None:
        varints += _varint(rate_code(rate))
    varints += b"".join(_varint(int(v)) for v in list(stream_lengths)[:-1])
    return len(MAGIC) + 1 + ID_BYTES + len(varints) + CRC_BYTES


def format_id(model_id: bytes) -> str:
    """A model id as users see it (hex)."""
    return bytes(model_id).hex()
