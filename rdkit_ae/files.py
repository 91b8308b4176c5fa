"""Writing files safely: atomic replacement and standard JSON.

Every checkpoint, result and report the toolkit writes goes through
:func:`atomic_write_bytes`, so a crash or a kill mid-write leaves the previous
file intact and never a torn one, and never replaces a device node, FIFO or
socket (:func:`check_writable`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from rdkit_ae.errors import RdkitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: Path) -> None:
    """Refuse a path that is neither new, a regular file nor a link: renaming over it would replace a device node.

    Run as root, ``os.replace(tmp, "/dev/null")`` replaces the system's
    ``/dev/null`` with a regular file. A symbolic link is itself replaced,
    not what it points to, so it is allowed here (commands refuse links to
    such files up front: :func:`rdkit_ae.commands.outputs.check_outputs`).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise RdkitError(f"refusing to write {path}: it exists and is not a regular file (a device, FIFO or folder)")


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(data))


def json_safe(obj: Any) -> Any:
    """Non-finite floats -> None, numpy scalars -> Python, paths -> str, so the JSON is standard."""
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_json(data: Any) -> str:
    """Indented, standard JSON (no NaN or Infinity) with a final newline."""
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as standard JSON, atomically."""
    atomic_write_text(path, dumps_json(data))
