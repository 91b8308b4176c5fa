"""Checks of ``rdkit decompress --backend/--onnx`` (kept here so the command's own module changes little)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rdkit_ae.errors import RdkitError

BACKENDS = ("torch", "onnx")


def backend_source(backend: str, model: Path | None, onnx: Path | None) -> Path:
    """What decodes: the checkpoint (torch) or the export folder (onnx); one line for any wrong combination."""
    if backend not in BACKENDS:
        raise RdkitError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnx":
        if onnx is None:
            raise RdkitError("--backend onnx needs --onnx DIR (a folder from `rdkit export onnx CHECKPOINT -o DIR`)")
        if model is not None:
            raise RdkitError("--backend onnx decodes with --onnx DIR alone; drop --model")
        return onnx
    if onnx is not None:
        raise RdkitError("--onnx DIR needs --backend onnx")
    if model is None:
        raise RdkitError("--model CHECKPOINT is needed (or --backend onnx --onnx DIR)")
    return model


def open_backend(backend: str, source: Path, max_pixels: int | None, torch_codec: Callable) -> tuple[Any, Callable]:
    """(decoder, decompress_file) of the backend: the export's :class:`OnnxDecoder`, or ``torch_codec(source)``."""
    if backend == "onnx":
        from rdkit_ae.interop.onnx.files import decompress_file, open_decoder

        return open_decoder(source, max_pixels), decompress_file
    from rdkit_ae.codec import decompress_file as torch_file

    return torch_codec(source, max_pixels), torch_file


__all__ = ["BACKENDS", "backend_source", "open_backend"]
