"""Building what a trained quantizer needs to code: CDF tables, and the integer networks beside them.

``update_entropy_models`` is ``CompressionModel.update`` for any module (an
``RDModel`` or a bare quantizer): it builds the EntropyBottleneck and
GaussianConditional tables, then converts every
:class:`~rdkit_ae.plugin.exact.IntegerNetwork` inside, so the portable
entropy-parameter path is made exactly when the tables are, and both are
saved in the checkpoint together.
"""

from __future__ import annotations

import torch.nn as nn
from compressai.models.base import CompressionModel

from rdkit_ae.plugin.exact import integer_networks


def update_entropy_models(module: nn.Module, scale_table=None, force: bool = False) -> bool:
    """Build CDF tables (where missing, or all with ``force``) and integer networks; True if anything was built.

    Integer networks are converted from the float weights when the tables are
    (re)built or when they are missing (an old checkpoint); stored ones are
    kept as they are and checked.
    """
    updated = bool(CompressionModel.update(module, scale_table=scale_table, force=force))
    for name, net in integer_networks(module):
        if force or updated or not net.ready:
            net.convert()
            updated = True
        else:
            net.check(f"integer network '{name}'")
    return updated


__all__ = ["update_entropy_models"]
