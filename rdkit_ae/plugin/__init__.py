"""The plugin interface: everything a plugin author imports, in one place.

.. code-block:: python

    from rdkit_ae.plugin import FixedRateQuantizer, register, check_int

Parameter and stream checks (one-line errors), :class:`BitstreamError` for
strings that do not fit, the bases for fixed-rate quantizers
(:class:`FixedRateQuantizer`: bit packing and device) and for the hyperprior
family (:class:`HyperpriorCodec`: tables, aux loss, layout, shape checks and
the portable entropy-parameter path), the integer networks behind that path,
and training callbacks (:class:`Callback`, :func:`register_callback`). The
contract each kind of plugin follows is the README's "Writing a plugin" table.

The callback names are imported on first use: this module is imported by
every built-in plugin, and the training package imports plugins.
"""

from __future__ import annotations

import importlib
from typing import Any

from rdkit_ae.errors import PluginError
from rdkit_ae.plugin.checks import (
    BitstreamError,
    check_bool,
    check_choice,
    check_int,
    check_latent,
    check_shape,
    check_streams,
)
from rdkit_ae.plugin.exact import IntegerNetwork, from_grid, to_grid
from rdkit_ae.plugin.fixed_rate import FixedRateQuantizer
from rdkit_ae.plugin.hyperprior import HyperpriorCodec
from rdkit_ae.plugin.tables import update_entropy_models
from rdkit_ae.registry import (
    register,
    register_callback,
    register_decoder,
    register_encoder,
    register_loss,
    register_quantizer,
)

_LAZY = {"Callback": "rdkit_ae.training.callbacks", "TrainContext": "rdkit_ae.training.context"}

__all__ = [
    "BitstreamError",
    "Callback",
    "FixedRateQuantizer",
    "HyperpriorCodec",
    "IntegerNetwork",
    "PluginError",
    "TrainContext",
    "check_bool",
    "check_choice",
    "check_int",
    "check_latent",
    "check_shape",
    "check_streams",
    "from_grid",
    "register",
    "register_callback",
    "register_decoder",
    "register_encoder",
    "register_loss",
    "register_quantizer",
    "to_grid",
    "update_entropy_models",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rdkit_ae.plugin' has no attribute {name!r}")
