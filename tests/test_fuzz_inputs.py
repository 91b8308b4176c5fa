"""Property-based fuzzing of the checkpoint loader and the image reader: one-line errors, never anything else.

The ``.rdk`` parser has its own fuzz tests (tests/test_fuzz_container.py).
The example budgets are small so CI stays fast; set ``RDKIT_FUZZ_EXAMPLES``
to run longer (see docs/format.md, "Fuzzing"). A crash in the C++ coder
would take the test run down: that is a failure too.
"""

from __future__ import annotations

import faulthandler
import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_codec_support import TINY, make_checkpoint
from test_hostile_support import png_bytes

from rdkit_ae.checkpoint import load_model
from rdkit_ae.data.sources import read_image
from rdkit_ae.errors import RdkitError

BUDGET = int(os.environ.get("RDKIT_FUZZ_EXAMPLES", "0")) or None
HANG_LIMIT_S = 300


def _examples(default: int) -> int:
    return BUDGET or default


@pytest.fixture(autouse=True)
def hang_guard():
    """A hang (the rANS encoder on NaN, say) ends the run with a traceback instead of never ending."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- the checkpoint loader ----------------------------------------------------------------
class _Checkpoint(tuple):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not 180 kB of weights
        return f"checkpoint({self[0]})"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    recipe, overrides = TINY["hyperprior"]
    path = make_checkpoint(tmp_path_factory.mktemp("fuzz") / "tiny.pt", recipe, overrides)
    return _Checkpoint((path, torch.load(path, weights_only=True)))


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(-5, 5), max_size=5),
    st.sampled_from(["float32", "int32", "int64", "uint8", "float64"]).flatmap(
        lambda dt: st.lists(st.integers(0, 6), min_size=0, max_size=3).map(
            lambda shape: torch.randint(-(2**20), 2**20, shape).to(getattr(torch, dt))
        )
    ),
)


@st.composite
def edits(draw, checkpoint: "_Checkpoint") -> list:
    """A few edits of a real checkpoint's payload: top-level fields, weights, or entropy tables."""
    payload = checkpoint[1]
    keys = sorted(payload["model"])
    tables = [k for k in keys if k.rsplit(".", 1)[-1] in ("_quantized_cdf", "_cdf_length", "_offset", "quantiles")]
    out = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "weight", "table", "value", "recipe"]))
        if where == "top":
            field = draw(st.sampled_from(["format", "version", "recipe", "model", "recipe_name"]))
            out.append(("top", field, draw(VALUES)))
        elif where == "weight":
            out.append(("model", draw(st.sampled_from(keys)), draw(VALUES)))
        elif where == "table":
            key = draw(st.sampled_from(tables))
            out.append(("entry", key, draw(st.integers(0, 10_000)), draw(st.integers(-(2**31), 2**31 - 1))))
        elif where == "value":
            key = draw(st.sampled_from(keys))
            out.append(("entry", key, draw(st.integers(0, 10_000)), draw(st.floats(allow_nan=True, width=32))))
        else:
            text = payload["recipe"]
            i = draw(st.integers(0, len(text)))
            out.append(("top", "recipe", text[:i] + draw(st.text(max_size=20)) + text[i + draw(st.integers(0, 20)) :]))
    return out


def _as_int(value: float, dtype: torch.dtype) -> int:
    info = torch.iinfo(dtype)
    return max(info.min, min(info.max, int(value) if math.isfinite(value) else 0))


def _apply(payload: dict, changes: list) -> dict:
    payload = {**payload, "model": {k: v.clone() for k, v in payload["model"].items()}}
    payload.pop("model_sha256", None)
    for change in changes:
        if change[0] == "top":
            payload[change[1]] = change[2]
        elif not isinstance(payload["model"], dict):
            continue  # the weights were replaced by an edit before this one
        elif change[0] == "model":
            payload["model"][change[1]] = change[2]
        elif isinstance(payload["model"].get(change[1]), torch.Tensor):
            _, key, index, value = change
            t = payload["model"][key].view(-1)
            if t.numel():
                t[index % t.numel()] = value if t.is_floating_point() else _as_int(value, t.dtype)
    return payload


def _loads_or_refuses(path: Path) -> None:
    try:
        model, _, _ = load_model(path)
    except RdkitError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    try:  # what loaded must code, or refuse in one line: the coders are guarded
        model.compress(torch.rand(1, 3, 16, 16))
    except RdkitError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=_examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_crafted_checkpoint_payloads_load_or_give_one_line(checkpoint, tmp_path_factory, data):
    path, payload = checkpoint
    crafted = _apply(payload, data.draw(edits(checkpoint)))
    target = tmp_path_factory.mktemp("ck") / "x.pt"
    torch.save(crafted, target)
    _loads_or_refuses(target)


@settings(max_examples=_examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_checkpoint_archives_give_one_line(checkpoint, tmp_path_factory, data):
    """Byte-level damage to the zip archive: its directory, headers and stored members."""
    path, _ = checkpoint
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["set", "truncate", "insert"]))
        if op == "set":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[pos:]
            if not raw:
                raw += b"\0"
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    target = tmp_path_factory.mktemp("ck") / "x.pt"
    target.write_bytes(bytes(raw))
    _loads_or_refuses(target)


def test_a_zip_of_something_else_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(RdkitError):
        load_model(tmp_path / "z.pt")


# -- the image reader --------------------------------------------------------------------------
def _encoded(fmt: str, size=(12, 9), mode="RGB") -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {
    "png": _encoded("PNG"),
    "png16": _encoded("PNG", mode="I;16"),
    "bmp": _encoded("BMP"),
    "ppm": _encoded("PPM"),
    "tif": _encoded("TIFF"),
    "jpg": _encoded("JPEG"),
    "gif": _encoded("GIF", mode="P"),
    "webp": _encoded("WEBP"),
}
LIMIT = 1 << 16  # pixels: whatever a mutated header claims, nothing big is decoded


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[suffix])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "big"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[max(pos, 1) :]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:  # sizes live in headers: large values where small ones were
            data[pos : pos + 4] = b"\x7f\xff\xff\xff"
    return suffix.rstrip("16"), bytes(data)


def _reads_or_refuses(path: Path) -> None:
    try:
        image, notes = read_image(path, max_pixels=LIMIT)
    except RdkitError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= LIMIT and all(isinstance(n, str) for n in notes)


@settings(max_examples=_examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(case=image_files())
def test_damaged_images_read_or_give_one_line(tmp_path_factory, case):
    suffix, data = case
    path = tmp_path_factory.mktemp("img") / f"x.{suffix}"
    path.write_bytes(data)
    _reads_or_refuses(path)


@settings(max_examples=_examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    depth=st.sampled_from([1, 2, 4, 8, 16, 3]),
    color=st.sampled_from([0, 2, 3, 4, 6, 1]),
    idat=st.binary(max_size=64),
)
def test_png_headers_claiming_anything_read_or_give_one_line(tmp_path_factory, width, height, depth, color, idat):
    path = tmp_path_factory.mktemp("png") / "x.png"
    path.write_bytes(png_bytes(width, height, idat, bit_depth=depth, color_type=color))
    _reads_or_refuses(path)
