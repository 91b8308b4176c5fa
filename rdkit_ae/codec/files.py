"""Image files <-> ``.rdk`` files with a :class:`~rdkit_ae.codec.coder.Codec` (what the CLI commands call).

Outputs are written atomically, only once everything succeeded: an error
never leaves a partial or corrupt file behind.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rdkit_ae.codec import container
from rdkit_ae.codec.coder import Codec
from rdkit_ae.codec.identity import ModelMismatchError
from rdkit_ae.data.sources import read_image
from rdkit_ae.errors import DataError, FormatError, RdkitError
from rdkit_ae.evaluation.metrics import CodedSize, quality
from rdkit_ae.files import atomic_write_bytes

MAX_FILE_BYTES = 1 << 30  # an .rdk larger than this is refused before it is read
_FORMATS = {".png": "PNG", ".bmp": "BMP", ".ppm": "PPM", ".tif": "TIFF", ".tiff": "TIFF"}


@dataclass
class Report(CodedSize):
    """What ``rdkit compress`` / ``decompress`` print for one file."""

    source: str
    output: str
    height: int
    width: int
    nbytes: int
    header_bytes: int
    psnr: float | None = None
    ssim: float | None = None
    verified: bool = False
    notes: list[str] = field(default_factory=list)
    rate: float | None = None  # a variable-rate model's rate position (the file's)


def read_rdk(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read an ``.rdk`` file, refusing one larger than ``max_bytes`` before reading it."""
    p = Path(path)
    try:
        if not p.is_file():
            raise FormatError(f"file not found: {p}" if not p.exists() else f"not a file: {p}")
        size = p.stat().st_size
        if size > max_bytes:
            raise FormatError(f"{p}: {size:,} bytes is larger than an .rdk file may be ({max_bytes:,})")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise FormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise FormatError(f"{p}: larger than an .rdk file may be ({max_bytes:,} bytes)")
    return data


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, lambda f: f.write(data))
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None


def encode_image(image: np.ndarray, suffix: str = ".png") -> bytes:
    """A uint8 (H, W, 3) image as lossless file bytes (PNG unless ``suffix`` names another); deterministic."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format=_FORMATS.get(suffix.lower(), "PNG"))
    return buf.getvalue()


def _prefixed(exc: RdkitError, source) -> RdkitError:
    """The same kind of error, its message starting with the file it concerns."""
    msg = str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}"
    kind = (
        type(exc)
        if type(exc).__init__ is Exception.__init__
        else (FormatError if isinstance(exc, FormatError) else RdkitError)
    )
    return kind(msg)


def _verify(codec: Codec, data: bytes, reference: np.ndarray) -> None:
    decoded = codec.decompress(data, trusted=True)  # our own bytes, whatever their ratio
    if not np.array_equal(decoded, reference):
        diff = int((decoded != reference).any(axis=2).sum())
        raise RdkitError(
            f"verification failed: the decoded image differs from the model's reconstruction in {diff} pixels"
        )


def compress_file(
    codec: Codec, source: str | Path, output: str | Path, *, verify: bool = False, max_image_pixels: int | None = None
) -> Report:
    """Compress an image file to ``output`` (written atomically, only once everything succeeded).

    Images over ``max_image_pixels`` (default: ``$RDKIT_MAX_IMAGE_PIXELS`` or 32 MP) are refused from their header.
    """
    image, notes = read_source(source, max_image_pixels)
    try:
        data = codec.compress(image)
        reference = codec.reconstruct(image)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    return write_report(codec, source, output, image, data, reference, verify, notes, codec.rate)


def read_source(source: str | Path, max_image_pixels: int | None) -> tuple[np.ndarray, list[str]]:
    """An image file as a writable uint8 array and its notes; errors name the file."""
    try:
        image, notes = read_image(source, max_pixels=max_image_pixels)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    if not image.flags.writeable:  # Pillow's arrays are read-only; torch warns on those
        image = image.copy()
    return image, notes


def write_report(
    codec: Codec,
    source: str | Path,
    output: str | Path,
    image: np.ndarray,
    data: bytes,
    reference: np.ndarray,
    verify: bool,
    notes: list[str],
    rate: float | None,
) -> Report:
    """Verify (if asked) and write ``data`` atomically, then the report of what was written."""
    try:
        if verify:
            _verify(codec, data, reference)
        _write(Path(output), data)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    h, w = image.shape[:2]
    scores = quality(image[None], reference[None])[0]
    header = container.header_size(data, max_pixels=codec.max_pixels)
    if not container.claim_allowed(h, w, len(data) - header):
        notes.append(
            f"{len(data):,} bytes for {h * w:,} pixels is below what decoding accepts by default "
            f"({container.PIXELS_PER_BYTE} pixels per byte); decode it with --max-pixels {h * w}"
        )
    return Report(
        str(source), str(output), h, w, len(data), header, scores["psnr"], scores["ssim"], verify, notes, rate
    )


def decompress_file(codec: Codec, source: str | Path, output: str | Path) -> Report:
    """Decode an ``.rdk`` file to an image at ``output`` (written atomically, only after a full decode)."""
    try:
        data = read_rdk(source)
        image = codec.decompress(data)
        _write(Path(output), encode_image(image, Path(output).suffix))
    except ModelMismatchError as exc:
        raise ModelMismatchError(exc.file_id, exc.model_id, codec.source, str(source)) from None
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    h, w = image.shape[:2]
    packed = container.unpack(data, max_pixels=codec.max_pixels, pixels_per_byte=None)
    return Report(str(source), str(output), h, w, len(data), packed.header_bytes, rate=packed.rate)
