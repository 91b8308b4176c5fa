"""Crafted CompressAI weight files for the hostile-input tests (no tests here).

Real ``torch.save`` files of a small CompressAI model, edited the way an
attacker would, and :func:`torch_zip`, a hand-written ``torch.save`` that
writes any claim (a storage record of 2 GB of zeros, deflated, costs this
process no memory).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from compressai.zoo.image import model_architectures

ARCH = "bmshj2018-factorized"
TABLES = ("_quantized_cdf", "_offset", "_cdf_length")


def small_state(arch: str = ARCH, N: int = 8, M: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CompressAI model's state dict with its entropy tables built (a file of about 70 KB)."""
    torch.manual_seed(seed)
    model = model_architectures[arch](N, M)
    model.update(force=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


def without_tables(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """As CompressAI's training script saves it before ``update()``: empty tables."""
    return {k: (v[:0] if k.endswith(TABLES) else v) for k, v in state.items()}


def deflate(path: Path) -> Path:
    """Rewrite a torch zip archive with every member deflated (torch reads it; zeros shrink ~1000x)."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@dataclass
class Storage:
    key: str
    kind: str  # "FloatStorage", "IntStorage", ...
    numel: int


@dataclass
class Tensor:
    """What ``torch._utils._rebuild_tensor_v2`` receives: any shape and stride, checked by nobody here."""

    storage: Storage
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int = 0

    def __reduce__(self):
        args = (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.numel)
        return None


def torch_zip(path: Path, obj: object, records: dict[str, bytes | int], compression: int = zipfile.ZIP_STORED) -> Path:
    """A torch.save-style archive of ``obj`` (with :class:`Tensor` leaves); an int record is that many zero bytes."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for key, data in records.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = compression
            with zf.open(info, "w", force_zip64=isinstance(data, int) and data >= 1 << 31) as f:
                if isinstance(data, bytes):
                    f.write(data)
                    continue
                chunk = bytes(min(data, 16 << 20))
                for start in range(0, data, len(chunk)):
                    f.write(chunk[: min(len(chunk), data - start)])
        zf.writestr("archive/version", "3\n")
    return path


def claims_of(state: dict[str, torch.Tensor]) -> tuple[dict[str, Tensor], dict[str, bytes]]:
    """A real state dict as :func:`torch_zip` input: one storage record per tensor, honest claims."""
    kinds = {torch.float32: "FloatStorage", torch.int32: "IntStorage", torch.int64: "LongStorage"}
    tensors, records = {}, {}
    for i, (name, t) in enumerate(state.items()):
        t = t.contiguous()
        storage = Storage(str(i), kinds[t.dtype], t.numel())
        tensors[name] = Tensor(storage, tuple(t.shape), tuple(t.stride()))
        records[str(i)] = t.numpy().tobytes()
    return tensors, records


class Payload:
    """Runs ``touch MARKER`` when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def legacy_save(obj: object, path: Path) -> Path:
    """torch.save in the legacy (pre-1.6, non-zip) format, which old CompressAI zoo files may use."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path
