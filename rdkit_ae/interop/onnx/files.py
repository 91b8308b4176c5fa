"""``.rdk`` files to images with an ONNX export: what ``rdkit decompress --backend onnx`` runs per file."""

from __future__ import annotations

from pathlib import Path

from rdkit_ae.codec import container
from rdkit_ae.codec.files import Report, encode_image, read_rdk
from rdkit_ae.errors import DataError, FormatError, RdkitError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.interop.onnx.decoder import ExportMismatchError, OnnxDecoder


def open_decoder(folder: str | Path, max_pixels: int | None = None, threads: int = 1) -> OnnxDecoder:
    """The decoder of an export; an explicit ``max_pixels`` replaces the bomb bound, as ``--max-pixels`` does."""
    if max_pixels is None:
        return OnnxDecoder(folder, threads=threads)
    return OnnxDecoder(folder, threads=threads, max_pixels=max(max_pixels, 1), pixels_per_byte=None)


def decompress_file(decoder: OnnxDecoder, source: str | Path, output: str | Path) -> Report:
    """Decode an ``.rdk`` file to an image at ``output`` (written atomically, only after a full decode)."""
    try:
        data = read_rdk(source)
        image = decoder.decompress(data)
        png = encode_image(image, Path(output).suffix)
        try:
            atomic_write_bytes(Path(output), lambda f: f.write(png))
        except OSError as exc:
            raise DataError(f"{output}: cannot write ({exc.strerror or exc})") from None
    except ExportMismatchError as exc:
        raise ExportMismatchError(exc.file_id, exc.model_id, decoder.source, str(source)) from None
    except RdkitError as exc:
        msg = str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}"
        raise (FormatError(msg) if isinstance(exc, FormatError) else RdkitError(msg)) from None
    h, w = image.shape[:2]
    packed = container.unpack(data, max_pixels=decoder.max_pixels, pixels_per_byte=None)
    return Report(str(source), str(output), h, w, len(data), packed.header_bytes, rate=packed.rate)


__all__ = ["decompress_file", "open_decoder"]
