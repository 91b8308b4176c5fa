"""Output paths that commands may write: never one of their inputs, never an existing file without ``--force``.

``rdkit compress IMG -m M.pt -o M.pt`` once replaced the checkpoint with an
``.rdk`` file; every command that writes files checks its outputs here before
doing any work. Paths are compared after resolving symbolic links, and with
:func:`os.path.samefile` so that a hard link to an input counts as the input.
Light imports only: this runs at CLI start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from rdkit_ae.errors import RdkitError

FORCE_HELP = "overwrite output files that already exist (an output is never allowed to be one of the inputs)"


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (symbolic or hard links included); False if either is missing."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Iterable[tuple[str, Optional[Path]]], inputs: Iterable[Path], *, force: bool = False
) -> None:
    """Refuse before any work: an output that is an input, two outputs that are one file, or an existing file.

    ``outputs`` are ``(option, path)`` pairs (``path`` None when not asked
    for); ``option`` names the flag in the message. An existing output is
    refused unless ``force``; an output that is an input always is.
    """
    sources = [Path(p) for p in inputs]
    seen: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        path = Path(path)
        for src in sources:
            if same_file(path, src):
                raise RdkitError(f"refusing to overwrite the input {src} with {option} {path}; choose another path")
        for other_option, other in seen:
            if same_file(path, other):
                raise RdkitError(f"{other_option} and {option} both name {path}; give each its own file")
        if path.is_dir():
            raise RdkitError(f"{option} {path} is a folder, not a file")
        if path.exists() and not force:
            raise RdkitError(f"{option} {path} already exists; pass --force to overwrite it")
        seen.append((option, path))
