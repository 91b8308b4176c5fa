"""ONNX export of rdkit-ae models and a decoder that runs them in ONNX Runtime (the ``[onnx]`` extra).

``rdkit export onnx CHECKPOINT -o DIR`` writes the graphs, the entropy tables
and a manifest (:func:`export_onnx`); ``OnnxDecoder(DIR).decompress(data)``
or ``rdkit decompress FILE.rdk --backend onnx --onnx DIR`` decodes ``.rdk``
files without torch models. See docs/interop.md, "ONNX and non-Python decoders".
Names are imported on first use, so ``import rdkit_ae.interop.onnx`` stays light.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "export_onnx": "export",
    "export_model": "export",
    "ExportReport": "export",
    "UnsupportedModel": "export",
    "OnnxDecoder": "decoder",
    "Decoded": "decoder",
    "ExportMismatchError": "decoder",
    "decompress_file": "files",
    "MissingDependency": "deps",
    "INSTALL_HINT": "deps",
    "ExportDirError": "manifest",
}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'rdkit_ae.interop.onnx' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"rdkit_ae.interop.onnx.{module}"), name)


__all__ = sorted(_NAMES)
