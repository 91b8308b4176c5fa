"""What a PyTorch file claims, read from its pickle alone, before ``torch.load`` allocates any of it.

``torch.load`` allocates what a file claims before it can check it: a zip
archive's storage records as large as their headers say (a 2 MB file can
hold a deflated 2 GB record), and in the legacy format every storage's
element count. Even ``weights_only=True`` only restricts which objects the
pickle may build. So an untrusted weight file is read in two passes:

1. :func:`read_claims` reads the pickle (at most :data:`MAX_PICKLE_BYTES`)
   with a restricted, pure-Python unpickler that builds stand-ins
   (:class:`TensorClaim`) instead of tensors, and checks every storage
   against the bytes the file really holds; the caller then checks the
   claimed shapes and sizes against its own limits;
2. ``torch.load(weights_only=True)``, and :func:`check_loaded` compares what
   it built with the claims, so the two passes cannot read a crafted file
   differently without being refused.

Both formats ``torch.load`` reads are handled: the zip archive of
``torch.save`` and the legacy pickle stream
(``_use_new_zipfile_serialization=False``); anything else is refused.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch

from rdkit_ae.checkpoint import check_archive_size
from rdkit_ae.errors import CheckpointError
from rdkit_ae.text import one_line

MAX_PICKLE_BYTES = 4 << 20  # a zoo model's pickle is ~10 KB; Python objects cost at most ~64x the pickle's bytes
MAX_DIMS = 64  # torch's own limit on tensor dimensions
ZIP_MAGIC = b"PK\x03\x04"  # torch.load's test for the zip format (it reads the first bytes, not the end)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _Refused(Exception):
    """A pickle that builds something other than tensors and plain data."""


@dataclass(frozen=True, slots=True)  # slots: the pickle's BUILD opcode cannot rewrite a claim's fields
class StorageClaim:
    key: str
    dtype: torch.dtype
    numel: int  # elements of dtype

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True, slots=True)
class TensorClaim:
    storage: StorageClaim
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class FileClaims:
    """A file's pickled object with :class:`TensorClaim` leaves, and the tensor data ``torch.load`` would read."""

    root: Any
    stored_bytes: int  # bytes torch.load allocates for storages (zip: every member, as its header says)
    storages: dict[str, StorageClaim] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: torch.dtype


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise _Refused(f"a tensor's {what} is not a list of at most {MAX_DIMS} numbers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise _Refused(f"a tensor's {what} holds something other than non-negative integers")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorClaim:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: the claim, checked to lie inside its storage."""
    if not isinstance(storage, StorageClaim):
        raise _Refused("a tensor without a storage")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or len(strides) != len(shape):
        raise _Refused("a tensor with a malformed offset or stride")
    claim = TensorClaim(storage, offset, shape, strides)
    extent = offset + (sum((n - 1) * s for n, s in zip(shape, strides)) + 1 if claim.numel else 0)
    if extent > storage.numel:
        raise _Refused(f"a tensor of shape {shape} reaches past the end of its storage of {storage.numel:,} numbers")
    return claim


def _parameter(data: Any, *_: Any) -> Any:
    return data  # torch._utils._rebuild_parameter(_with_state): the tensor is what counts


def _allowed(module: str, name: str) -> Any:
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(STORAGE_DTYPES[name])
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,  # a MultiStepLR's milestones
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    }.get((module, name))


class _ClaimUnpickler(pickle._Unpickler):
    """Builds plain data and :class:`TensorClaim` stand-ins; refuses every other global.

    The pure-Python unpickler, not the C one: it reads a length field's
    bytes as they come, where the C one first allocates what the field says.
    """

    def __init__(self, data: BinaryIO, legacy: bool):
        super().__init__(data)
        self.legacy, self.framed = legacy, False
        self.storages: dict[str, StorageClaim] = {}

    def load_frame(self) -> None:
        self.framed = True  # see _unpickle
        pickle._Unpickler.load_frame(self)  # type: ignore[attr-defined]

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.FRAME[0]] = load_frame  # type: ignore[assignment]

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise _Refused(f"GLOBAL {module}.{name}"[:160])
        return found

    def persistent_load(self, pid: Any) -> StorageClaim:
        if not isinstance(pid, tuple) or len(pid) != (6 if self.legacy else 5):
            raise _Refused("a persistent record that is not a storage")
        tag = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if tag != "storage":
            raise _Refused("a persistent record that is not a storage")
        kind, key, numel = pid[1], pid[2], pid[4]
        if self.legacy and pid[5] is not None:
            raise _Refused("storage views (a pre-1.0 PyTorch format)")
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or isinstance(numel, bool):
            raise _Refused("a malformed storage record")
        if not isinstance(numel, int) or numel < 0:
            raise _Refused("a storage of a negative or non-integer size")
        claim = StorageClaim(key, kind.dtype, numel)
        # torch.load keeps the first record of a key and reuses it: two different ones are a crafted file.
        if self.storages.setdefault(key, claim) != claim:
            raise _Refused(f"storage '{key[:40]}' claimed twice with different sizes")
        return claim


def _unpickle(stream: BinaryIO, legacy: bool, first: bool = False) -> tuple[Any, dict[str, StorageClaim]]:
    unpickler = _ClaimUnpickler(stream, legacy)
    value = unpickler.load()
    if legacy and unpickler.framed and not (first and value != LEGACY_MAGIC):
        # torch's unpickler does not buffer frames: a frame running past the end of one of a legacy file's
        # pickles would make it read the next one from elsewhere than this one does. torch writes none.
        raise _Refused("a pickle frame in a legacy-format file (torch writes none)")
    return value, unpickler.storages


def read_claims(path: Path, byte_limit: int) -> FileClaims:
    """The claims of the PyTorch file at ``path``; refused if its storages would unpack to over ``byte_limit`` bytes.

    Raises a one-line :class:`CheckpointError` for a file that pickles code or
    objects (the global it names), a malformed or truncated file, and storages
    that the file does not hold.
    """
    with path.open("rb") as f:
        zipped = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    try:
        return _read_zip(path, byte_limit) if zipped else _read_legacy(path, byte_limit)
    except _Refused as exc:
        if str(exc).startswith("GLOBAL "):
            raise CheckpointError(
                f"{path}: refused: the file holds pickled objects that safe loading does not allow ({exc})"
            ) from None
        raise CheckpointError(f"{path}: refused: {exc}") from None
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle or archive can raise anything
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({one_line(exc, 200)})") from None


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Members by lower-cased name: torch's zip reader (miniz) looks names up without regard to case."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if members.setdefault(info.filename.lower(), info) is not info:
            raise _Refused(f"the archive holds '{info.filename[:80]}' twice")
    return members


def _read_zip(path: Path, byte_limit: int) -> FileClaims:
    check_archive_size(path, byte_limit)  # the members' sizes from the central directory, as torch reads them
    with zipfile.ZipFile(path) as zf:
        members = _members(zf)
        infos = zf.infolist()
        # torch's reader takes the folder of the archive's first entry as the one every record is in.
        prefix = infos[0].filename.split("/", 1)[0] + "/" if infos and "/" in infos[0].filename else None
        pkl = members.get(f"{prefix}data.pkl".lower()) if prefix else None
        if pkl is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (no data.pkl in the archive)")
        if pkl.file_size > MAX_PICKLE_BYTES:
            raise _Refused(f"its pickle is {pkl.file_size:,} bytes, more than the limit of {MAX_PICKLE_BYTES:,}")
        with zf.open(pkl) as member:
            data = member.read(MAX_PICKLE_BYTES + 1)
    root, storages = _unpickle(io.BytesIO(data), legacy=False)
    for key, claim in storages.items():
        record = members.get(f"{prefix}data/{key}".lower())
        if record is None or record.file_size != claim.nbytes:
            held = "no record" if record is None else f"a record of {record.file_size:,} bytes"
            raise _Refused(f"storage '{key[:40]}' claims {claim.nbytes:,} bytes; the archive holds {held}")
    return FileClaims(root, sum(info.file_size for info in infos), storages)


def _read_legacy(path: Path, byte_limit: int) -> FileClaims:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = io.BytesIO(f.read(min(size, MAX_PICKLE_BYTES)))
    magic, _ = _unpickle(head, legacy=True, first=True)
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor torch's format)")
    if _unpickle(head, legacy=True)[0] != LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (an unknown legacy protocol)")
    _unpickle(head, legacy=True)  # system information
    root, storages = _unpickle(head, legacy=True)
    keys, _ = _unpickle(head, legacy=True)
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise _Refused("its list of storages does not match the storages it uses")
    # Each storage follows as an 8-byte count and its bytes; torch allocates the claim before reading.
    stored = sum(claim.nbytes for claim in storages.values())
    held = size - head.tell()
    if stored + 8 * len(storages) > held:
        raise _Refused(f"its storages claim {stored:,} bytes; the file holds {held:,} after its pickles")
    if stored > byte_limit:
        raise _Refused(f"its storages claim {stored:,} bytes, more than the limit of {byte_limit:,}")
    return FileClaims(root, stored, storages)


def check_state(where: str, state: Mapping[str, TensorClaim], byte_limit: int) -> None:
    """Refuse tensors that claim more numbers than their storage holds, or more bytes in all than ``byte_limit``.

    A zero (or overlapping) stride lets 8 stored numbers claim 640 million:
    free as a view, but copied into a model (or resized into an entropy
    table) the claim is allocated in full.
    """
    total = 0
    for name, claim in state.items():
        room = claim.storage.numel - claim.offset
        if claim.numel > max(room, 0):
            raise CheckpointError(
                f"{where}: refused: tensor '{name}' of shape {claim.shape} claims {claim.numel:,} numbers from a "
                f"storage holding {max(room, 0):,} (a zero or overlapping stride)"
            )
        total += claim.nbytes
    if total > byte_limit:
        raise CheckpointError(
            f"{where}: refused: its tensors hold {total:,} bytes, more than the limit of {byte_limit:,}"
        )


def check_loaded(where: str, loaded: Mapping[str, Any], claims: Mapping[str, TensorClaim]) -> None:
    """``torch.load``'s tensors must be the claims checked before it ran: same names, dtypes, shapes and strides."""
    same = set(loaded) == set(claims) and all(
        isinstance(t, torch.Tensor)
        and (t.dtype, tuple(t.shape), tuple(t.stride()), t.storage_offset()) == (c.dtype, c.shape, c.stride, c.offset)
        for t, c in ((loaded[k], claims[k]) for k in claims)
    )
    if not same:
        raise CheckpointError(f"{where}: refused: torch reads the file differently from its pickle (a crafted file)")


def map_state(root: Any, keys: tuple[str, ...], rename: Callable[[str], str]) -> Any:
    """The state dict inside ``root`` (itself, or under the first of ``keys`` that holds a dict), keys renamed."""
    if isinstance(root, dict):
        for key in keys:
            if isinstance(root.get(key), dict):
                root = root[key]
                break
    if not isinstance(root, dict):
        return root
    return {rename(k) if isinstance(k, str) else k: v for k, v in root.items()}


__all__ = [
    "FileClaims",
    "MAX_PICKLE_BYTES",
    "StorageClaim",
    "TensorClaim",
    "check_loaded",
    "check_state",
    "map_state",
    "read_claims",
]
