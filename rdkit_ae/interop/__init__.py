"""Interoperability with CompressAI: import its (pretrained) models as rdkit-ae checkpoints, export ours to it.

Supported architectures (layer for layer the same as rdkit-ae zoo recipes):
``bmshj2018-factorized``, ``bmshj2018-hyperprior``, ``mbt2018-mean``.
See docs/interop.md.
"""

from rdkit_ae.interop.architectures import ARCHITECTURES, UNSUPPORTED, Architecture, get_architecture, rate_weight
from rdkit_ae.interop.exporter import compressai_architecture, export_compressai, to_compressai
from rdkit_ae.interop.importer import (
    import_compressai,
    import_compressai_checkpoint,
    imported_recipe,
    read_compressai_weights,
)

__all__ = [
    "ARCHITECTURES",
    "UNSUPPORTED",
    "Architecture",
    "compressai_architecture",
    "export_compressai",
    "get_architecture",
    "import_compressai",
    "import_compressai_checkpoint",
    "imported_recipe",
    "rate_weight",
    "read_compressai_weights",
    "to_compressai",
]
