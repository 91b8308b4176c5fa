"""The entropy-coder guards, kept importable here: they live in :mod:`rdkit_ae.guards`.

They moved out of the codec package so that :func:`rdkit_ae.checkpoint.load_model`
can apply them to every model it loads without an import cycle.
"""

from rdkit_ae.guards import check_finite_weights, check_model, guard_entropy_coders

__all__ = ["check_finite_weights", "check_model", "guard_entropy_coders"]
