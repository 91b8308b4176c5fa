"""Output paths that commands may write: never one of their inputs, never an existing file without ``--force``.

``rdkit compress IMG -m M.pt -o M.pt`` once replaced the checkpoint with an
``.rdk`` file; every command that writes files checks its outputs here before
doing any work. Paths are compared after resolving symbolic links, and with
:func:`os.path.samefile` so that a hard link to an input counts as the input.
An output must be a new path or a regular file: ``-o /dev/null --force`` run
as root once replaced the system's ``/dev/null`` with a regular file, so a
device node, FIFO or socket (or a link to one) is refused, ``--force`` or
not (:func:`rdkit_ae.files.check_writable` refuses it again when writing).
Light imports only: this runs at CLI start-up.
"""

from __future__ import annotations

import os
import stat
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


def special_kind(path: Path) -> Optional[str]:
    """What ``path`` is (links followed) when it exists and is neither a regular file nor a folder, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # a new path (or a dangling link, which a write replaces)
    kinds = {
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), None)


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
        kind = special_kind(path)
        if kind is not None:
            raise RdkitError(f"{option} {path} is {kind}, not a regular file; write to a regular file or a new path")
        if path.exists() and not force:
            raise RdkitError(f"{option} {path} already exists; pass --force to overwrite it")
        seen.append((option, path))
