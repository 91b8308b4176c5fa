"""Issue #12, data: image decompression bombs, 16-bit notes, crafted .npz headers."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npformat
from test_hostile_support import assert_cheap, assert_one_line_error, png_bytes, run_cli

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.data.sources import image_size, load_images, read_image
from rdkit_ae.errors import DataError
from rdkit_ae.model import build_model


def _bomb_png(path: Path, side: int = 12000) -> Path:
    """A valid RGB PNG of side x side black pixels: ~0.4 MB on disk, 432 MB decoded."""
    row = b"\x00" * (side * 3 + 1)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(png_bytes(side, side, idat))
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=4"]).eval()
    path = tmp_path_factory.mktemp("data-ckpt") / "m.pt"
    save_checkpoint(path, model, model.recipe)
    return path


# -- images -----------------------------------------------------------------------------------------
def test_image_bomb_is_refused_from_its_header_in_a_child_process(tmp_path, tiny_ckpt):
    bomb = _bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1 << 20
    run = run_cli(tmp_path, "compress", bomb, "-m", tiny_ckpt, "-o", tmp_path / "b.rdk")
    assert_one_line_error(run, "12000x12000 pixels is larger than the limit", "RDKIT_MAX_IMAGE_PIXELS")
    assert_cheap(run)  # decoding first cost 3.1 GB
    assert not (tmp_path / "b.rdk").exists()


def test_header_claims_are_refused_before_decoding(tmp_path):
    # Beyond Pillow's own limit (2 x 89 MP): its DecompressionBombError is one DataError line too.
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(30000, 30000, zlib.compress(b"\x00" * 100)))
    for path in (huge,):
        with pytest.raises(DataError, match="refused: image .*larger than the limit"):
            read_image(path)
        with pytest.raises(DataError, match="larger than the limit"):
            image_size(path)
    # Just over our limit: refused, though the data would be truncated garbage (never decoded).
    mid = tmp_path / "mid.png"
    mid.write_bytes(png_bytes(6000, 6000, zlib.compress(b"\x00" * 100)))
    with pytest.raises(DataError, match="6000x6000 pixels is larger than the limit of 33,554,432"):
        read_image(mid)


def test_pixel_limit_is_explicit_by_parameter_and_environment(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(path)
    with pytest.raises(DataError, match="30x20 pixels is larger than the limit of 599"):
        read_image(path, max_pixels=599)
    assert read_image(path, max_pixels=600)[0].shape == (20, 30, 3)
    monkeypatch.setenv("RDKIT_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(DataError, match="limit of 599"):
        read_image(path)
    with pytest.raises(DataError, match="limit of 599"):
        load_images(tmp_path).image(0)
    monkeypatch.setenv("RDKIT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="RDKIT_MAX_IMAGE_PIXELS must be a positive number"):
        read_image(path)


def _png16(path: Path, arr: np.ndarray) -> Path:
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(png_bytes(w, h, zlib.compress(raw), bit_depth=16, color_type=color_type))
    return path


@pytest.fixture
def rgb16() -> np.ndarray:
    return (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1093 % 65536).astype(np.uint16)


def test_16_bit_rgb_png_and_ppm_get_a_note_and_are_scaled(tmp_path, rgb16):
    expected = np.round(rgb16 / 257.0).astype(np.uint8)
    png = _png16(tmp_path / "a.png", rgb16)
    ppm = tmp_path / "a.ppm"
    ppm.write_bytes(b"P6\n5 4\n65535\n" + rgb16.astype(">u2").tobytes())
    for path in (png, ppm):
        arr, notes = read_image(path)
        assert notes == ["16-bit RGB converted to 8-bit RGB"], (path, notes)
        assert arr.dtype == np.uint8 and arr.shape == (4, 5, 3)
        assert np.abs(arr.astype(int) - expected).max() <= 1


def test_16_bit_gray_png_note_and_scale(tmp_path, rgb16):
    arr, notes = read_image(_png16(tmp_path / "g.png", rgb16[..., 0]))
    assert notes == ["I;16 converted to 8-bit RGB"]
    assert np.array_equal(arr[..., 0], np.round(rgb16[..., 0] * (255 / 65535)).astype(np.uint8))
    assert np.array_equal(arr[..., 0], arr[..., 2])


def test_8_bit_rgb_png_has_no_note(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png")[1] == []


# -- .npz ----------------------------------------------------------------------------------------------
def _npz_with_header(path: Path, shape: tuple[int, ...], payload: bytes, dtype: str = "|u1") -> Path:
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + payload)
    return path


def test_npy_renamed_npz_is_refused(tmp_path):
    path = tmp_path / "x.npz"
    np.save(path.with_suffix(".npy"), np.zeros((2, 4, 4, 3), np.uint8))
    path.with_suffix(".npy").rename(path)
    with pytest.raises(DataError, match="not a .npz archive"):
        load_images(path)


def test_npz_header_claiming_terabytes_is_refused_before_loading(tmp_path):
    path = _npz_with_header(tmp_path / "tb.npz", (1_000_000, 1024, 1024, 3), b"\x00" * 64)
    with pytest.raises(DataError, match=r"claims \(1000000, 1024, 1024, 3\) uint8 \(3,145,728,000,000 bytes\)"):
        load_images(path)


def test_npz_header_that_does_not_match_its_data_is_refused(tmp_path):
    short = _npz_with_header(tmp_path / "short.npz", (10, 8, 8, 3), b"\x00" * 100)
    with pytest.raises(DataError, match=r"claims \(10, 8, 8, 3\) uint8 \(1,920 bytes\) but holds 100"):
        load_images(short)
    broken = tmp_path / "broken.npz"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 10) + b"garbage!!\n")
    with pytest.raises(DataError, match="'x.npy' is not a readable .npy array"):
        load_images(broken)


def test_npz_memory_bound_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "ok.npz"
    x = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    np.savez_compressed(path, x=x, y=np.arange(4))
    assert np.array_equal(load_images(path).array, x)
    monkeypatch.setenv("RDKIT_MAX_ARRAY_BYTES", "700")
    with pytest.raises(DataError, match="more than the limit of 700 .*RDKIT_MAX_ARRAY_BYTES"):
        load_images(path)


def test_npz_labels_must_match_images(tmp_path):
    path = tmp_path / "y.npz"
    np.savez(path, x=np.zeros((4, 8, 8, 3), np.uint8), y=np.arange(3))
    with pytest.raises(DataError, match="'y' must be 4 integer labels"):
        load_images(path)


def test_cli_renamed_and_lying_npz_are_one_line(tmp_path, tiny_ckpt):
    renamed = tmp_path / "r.npz"
    np.save(tmp_path / "r.npy", np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "r.npy").rename(renamed)
    assert_one_line_error(run_cli(tmp_path, "eval", tiny_ckpt, "--data", renamed), "not a .npz archive")
    lying = _npz_with_header(tmp_path / "tb.npz", (1_000_000, 1024, 1024, 3), b"\x00" * 64)
    run = run_cli(tmp_path, "eval", tiny_ckpt, "--data", lying)
    assert_one_line_error(run, "claims (1000000, 1024, 1024, 3) uint8")
    assert_cheap(run)
