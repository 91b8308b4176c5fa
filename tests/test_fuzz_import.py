"""Property-based fuzzing of `rdkit import compressai`: any weight file imports or gives one line, never more.

Three kinds of crafted files, from a small real CompressAI model: edited
claims written by a hand-made ``torch.save`` (shapes, strides, offsets,
storage sizes and records that disagree), edited values saved by torch
(NaN, huge and table entries; zip and legacy formats), and byte-level damage
to both formats. A file that imports must code an image, or refuse in one
line. The budget is small for CI; ``RDKIT_FUZZ_EXAMPLES`` runs it longer
(docs/format.md, "Fuzzing").
"""

from __future__ import annotations

import faulthandler
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hostile_weights import ARCH, Storage, Tensor, claims_of, legacy_save, small_state, torch_zip, without_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdkit_ae.errors import RdkitError
from rdkit_ae.interop import import_compressai

BUDGET = int(os.environ.get("RDKIT_FUZZ_EXAMPLES", "0")) or None
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))
STATE = small_state()
KEYS = sorted(STATE)
DIMS = st.one_of(st.integers(0, 12), st.sampled_from([2500, 80_000_000, 2**31, 2**62]))


@pytest.fixture(autouse=True)
def hang_guard():
    """A hang ends the run with a traceback instead of never ending."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _imports_or_refuses(path: Path) -> None:
    try:
        model, _ = import_compressai(ARCH, weights=path)
    except RdkitError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    try:  # what imported must code, or refuse in one line: the checks of load_model ran
        model.compress(torch.rand(1, 3, 32, 32))
    except RdkitError as exc:
        assert "\n" not in str(exc)


@st.composite
def claim_edits(draw) -> tuple[dict, dict]:
    """The claims of a real state dict with a few lies: shapes, strides, offsets, storages, records."""
    tensors, records = claims_of(STATE)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(KEYS))
        old = tensors[name]
        what = draw(st.sampled_from(["shape", "stride", "offset", "numel", "record", "kind", "share"]))
        if what in ("shape", "stride"):
            ndim = draw(st.integers(0, 5))
            shape = tuple(draw(st.lists(DIMS, min_size=ndim, max_size=ndim)))
            stride = tuple(draw(st.lists(st.integers(0, 2**40), min_size=ndim, max_size=ndim)))
            tensors[name] = Tensor(old.storage, shape if what == "shape" else old.shape, stride)
        elif what == "offset":
            tensors[name] = Tensor(old.storage, old.shape, old.stride, draw(st.integers(0, 2**40)))
        elif what in ("numel", "kind"):
            kind = draw(st.sampled_from(["FloatStorage", "IntStorage", "LongStorage", "ByteStorage"]))
            numel = draw(DIMS) if what == "numel" else old.storage.numel
            storage = Storage(old.storage.key, kind if what == "kind" else old.storage.kind, numel)
            tensors[name] = Tensor(storage, old.shape, old.stride, old.offset)
        elif what == "record":
            data = records[old.storage.key]
            records[old.storage.key] = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
        else:  # another tensor's storage
            tensors[name] = Tensor(tensors[draw(st.sampled_from(KEYS))].storage, old.shape, old.stride)
    return tensors, records


@settings(max_examples=BUDGET or 30, **SETTINGS)
@given(case=claim_edits(), deflated=st.booleans())
def test_lying_claims_import_or_give_one_line(tmp_path_factory, case, deflated):
    tensors, records = case
    path = tmp_path_factory.mktemp("claims") / "w.pth.tar"
    torch_zip(path, tensors, records, zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED)
    _imports_or_refuses(path)


VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(2**31), 2**31 - 1))


@settings(max_examples=BUDGET or 30, **SETTINGS)
@given(data=st.data(), legacy=st.booleans(), tables=st.booleans())
def test_edited_values_import_or_give_one_line(tmp_path_factory, data, legacy, tables):
    state = {k: v.clone() for k, v in (STATE if tables else without_tables(STATE)).items()}
    for _ in range(data.draw(st.integers(1, 4))):
        t = state[data.draw(st.sampled_from(KEYS))].view(-1)
        if t.numel():
            value = data.draw(VALUES)
            index = data.draw(st.integers(0, t.numel() - 1))
            if t.is_floating_point():
                t[index] = float(value)
            else:
                t[index] = int(value) if isinstance(value, int) else 0
    path = tmp_path_factory.mktemp("values") / "w.pth.tar"
    legacy_save(state, path) if legacy else torch.save(state, path)
    _imports_or_refuses(path)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("seeds")
    torch.save(STATE, root / "zip.pth.tar")
    legacy_save({"epoch": 1, "state_dict": STATE}, root / "legacy.pth.tar")
    return {name: (root / f"{name}.pth.tar").read_bytes() for name in ("zip", "legacy")}


@settings(max_examples=BUDGET or 40, **SETTINGS)
@given(data=st.data())
def test_damaged_files_import_or_give_one_line(seeds, tmp_path_factory, data):
    raw = bytearray(seeds[data.draw(st.sampled_from(sorted(seeds)))])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["set", "truncate", "insert", "big"]))
        if op == "set":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[max(pos, 1) :]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # sizes and counts live in headers and pickles: large values where small ones were
            raw[pos : pos + 4] = b"\x7f\xff\xff\xff"
    path = tmp_path_factory.mktemp("damaged") / "w.pth.tar"
    path.write_bytes(bytes(raw))
    _imports_or_refuses(path)
