"""The optional dependencies of the ONNX export and decoder, imported on demand with a one-line hint."""

from __future__ import annotations

from types import ModuleType

from rdkit_ae.errors import RdkitError

INSTALL_HINT = "pip install 'rdkit-ae[onnx]'"


class MissingDependency(RdkitError):
    """onnx or onnxruntime is not installed."""


def _require(name: str, purpose: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependency(f"{purpose} needs the '{name}' package: {INSTALL_HINT}") from None


def onnx() -> ModuleType:
    """The ``onnx`` package (graphs, checker)."""
    return _require("onnx", "the ONNX export")


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` package (the decoder's runtime)."""
    return _require("onnxruntime", "the ONNX backend")


__all__ = ["INSTALL_HINT", "MissingDependency", "onnx", "onnxruntime"]
