"""``.npz`` image arrays, read only after their headers say they are what we expect.

``np.load`` trusts an array's header: a few hundred bytes can claim terabytes,
and a ``.npy`` renamed ``.npz`` loads as a bare array. Here each member's
header is read inside the zip first, its shape, dtype and byte count checked
against the member's real size and a memory bound, and only then is it loaded.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npformat

from rdkit_ae.errors import DataError
from rdkit_ae.limits import env_limit

MAX_ARRAY_BYTES_ENV = "RDKIT_MAX_ARRAY_BYTES"
DEFAULT_MAX_ARRAY_BYTES = 4 << 30  # 4 GiB: CIFAR-10 whole is 184 MB


def array_byte_limit(max_bytes: int | None = None) -> int:
    """``max_bytes``, else ``$RDKIT_MAX_ARRAY_BYTES``, else 4 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    return env_limit(MAX_ARRAY_BYTES_ENV, DEFAULT_MAX_ARRAY_BYTES, "bytes", DataError)


def _read_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = npformat.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = npformat.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    return tuple(int(d) for d in shape), dtype


def _check_member(path: Path, zf: zipfile.ZipFile, member: str, limit: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``member``, refusing headers that do not match the data that follows them."""
    info = zf.getinfo(member)
    try:
        with zf.open(info) as fp:
            shape, dtype = _read_header(fp)
            header_len = fp.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: '{member}' is not a readable .npy array ({str(exc).splitlines()[0][:160]})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: '{member}' holds Python objects; only numeric arrays are read")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit:
        raise DataError(
            f"{path}: '{member}' claims {shape} {dtype} ({nbytes:,} bytes), more than the limit of {limit:,} "
            f"(set {MAX_ARRAY_BYTES_ENV} to allow more)"
        )
    if info.file_size - header_len != nbytes:
        raise DataError(
            f"{path}: '{member}' claims {shape} {dtype} ({nbytes:,} bytes) but holds {info.file_size - header_len:,}"
        )
    return shape, dtype


def _member(names: list[str], key: str) -> str | None:
    return next((n for n in (f"{key}.npy", key) if n in names), None)


def load_npz(path: Path, *, max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (uint8, (N, H, W, 3)) and the optional labels ``y`` ((N,), integers) of a ``.npz``."""
    limit = array_byte_limit(max_bytes)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz archive (numpy's savez writes a zip file; is it a renamed .npy?)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            x_name, y_name = _member(names, "x"), _member(names, "y")
            if x_name is None:
                raise DataError(
                    f"{path}: .npz must hold a uint8 array 'x' of shape (N, H, W, 3); found "
                    f"{', '.join(n.removesuffix('.npy') for n in names) or 'nothing'}"
                )
            x_shape, x_dtype = _check_member(path, zf, x_name, limit)
            if x_dtype != np.uint8 or len(x_shape) != 4 or x_shape[-1] != 3:
                raise DataError(f"{path}: 'x' must be uint8 of shape (N, H, W, 3), got {x_dtype} {x_shape}")
            if y_name is not None:
                y_shape, y_dtype = _check_member(path, zf, y_name, limit)
                if y_dtype.kind not in "iu" or y_shape != x_shape[:1]:
                    raise DataError(f"{path}: 'y' must be {x_shape[0]} integer labels, got {y_dtype} {y_shape}")
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f[x_name]
            y = f[y_name] if y_name is not None else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({str(exc).splitlines()[0][:160]})") from None
    return x, y
