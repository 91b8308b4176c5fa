"""rdkit-ae: a plugin-based rate-distortion toolkit for learned image compression.

The public API is imported lazily so that ``import rdkit_ae`` (and the
``rdkit`` CLI's ``--help``) do not pay for importing torch and CompressAI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0"

_API = {
    "load_recipe": "rdkit_ae.recipe",
    "Recipe": "rdkit_ae.recipe",
    "zoo_names": "rdkit_ae.recipe",
    "build_model": "rdkit_ae.model",
    "build_objective": "rdkit_ae.model",
    "RDModel": "rdkit_ae.model",
    "Objective": "rdkit_ae.model",
    "register": "rdkit_ae.registry",
    "register_encoder": "rdkit_ae.registry",
    "register_decoder": "rdkit_ae.registry",
    "register_quantizer": "rdkit_ae.registry",
    "register_loss": "rdkit_ae.registry",
    "register_callback": "rdkit_ae.registry",
    "Callback": "rdkit_ae.training.callbacks",
    "plugin": "rdkit_ae.plugin",
    "list_plugins": "rdkit_ae.registry",
    "get_plugin": "rdkit_ae.registry",
    "create": "rdkit_ae.registry",
    "REGISTRY": "rdkit_ae.registry",
    "save_checkpoint": "rdkit_ae.checkpoint",
    "load_checkpoint": "rdkit_ae.checkpoint",
    "load_model": "rdkit_ae.checkpoint",
    "RdkitError": "rdkit_ae.errors",
    "train": "rdkit_ae.training",
    "TrainResult": "rdkit_ae.training",
    "evaluate": "rdkit_ae.evaluation",
    "evaluate_checkpoint": "rdkit_ae.evaluation",
    "EvalResult": "rdkit_ae.evaluation",
    "run_sweep": "rdkit_ae.bench",
    "load_spec": "rdkit_ae.bench",
    "bjontegaard": "rdkit_ae.evaluation.bdrate",
    "Codec": "rdkit_ae.codec",
    "compress_array": "rdkit_ae.codec",
    "decompress_bytes": "rdkit_ae.codec",
    "compress_file": "rdkit_ae.codec",
    "decompress_file": "rdkit_ae.codec",
    "load_images": "rdkit_ae.data",
}

# `train` and `evaluate` are functions; the subpackages that hold them are named
# `training` and `evaluation`, so importing one never shadows the other.
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name == "plugin":  # the plugin-author module itself
        return importlib.import_module("rdkit_ae.plugin")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rdkit_ae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
