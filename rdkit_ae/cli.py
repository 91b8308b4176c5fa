"""The ``rdkit`` command line: a thin layer over the Python API.

Only typer is imported at start-up; every command imports torch, CompressAI
and the rest of rdkit_ae inside its body so ``rdkit --help`` stays fast.
The app and the error handler live in :mod:`rdkit_ae.commands.app`; importing
the command modules here registers their commands on it.
"""

from __future__ import annotations

from rdkit_ae.commands import bench as _bench  # noqa: F401
from rdkit_ae.commands import codec as _codec  # noqa: F401
from rdkit_ae.commands import compare as _compare  # noqa: F401
from rdkit_ae.commands import core as _core  # noqa: F401
from rdkit_ae.commands import evaluation as _evaluation  # noqa: F401
from rdkit_ae.commands import interop as _interop  # noqa: F401
from rdkit_ae.commands import training as _training  # noqa: F401
from rdkit_ae.commands.app import app, handle_errors, new_app

__all__ = ["app", "handle_errors", "new_app", "run"]


def run() -> None:
    """Console-script entry point."""
    import warnings

    # CompressAI 1.2.8 calls torch.jit.script, which torch 2.14 deprecates; the
    # warning means nothing to a CLI user (the library itself does not filter it).
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    app()
