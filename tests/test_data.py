"""Data sources: .npz, image folders, single files, splits, image conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rdkit_ae.data.sources import iter_images, load_images, read_image, to_tensor, to_uint8
from rdkit_ae.errors import DataError


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(20))
    return path, x


def test_npz_splits_are_disjoint_deterministic_and_complete(npz):
    path, x = npz
    tr = load_images(path, "train", val_fraction=0.25, seed=3)
    va = load_images(path, "val", val_fraction=0.25, seed=3)
    assert (len(tr), len(va)) == (15, 5)
    rows = {r.tobytes() for r in tr.array} | {r.tobytes() for r in va.array}
    assert rows == {r.tobytes() for r in x}
    assert np.array_equal(load_images(path, "val", val_fraction=0.25, seed=3).array, va.array)
    assert not np.array_equal(load_images(path, "val", val_fraction=0.25, seed=4).labels, va.labels)
    assert len(load_images(path, "all", limit=7)) == 7
    assert np.array_equal(load_images(path, "all", start=12, limit=5).array, x[12:17])
    assert np.array_equal(load_images(path, "all", start=18).array, x[18:])


def test_folder_and_single_file(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i, size in enumerate([(10, 12), (7, 5), (16, 16)]):
        arr = np.full((*size, 3), i * 40, np.uint8)
        Image.fromarray(arr).save(tmp_path / "imgs" / ("sub" if i else "") / f"{i}.png")
    s = load_images(tmp_path / "imgs")
    assert len(s) == 3
    shapes = sorted(img.shape for _, img in iter_images(s))
    assert shapes == [(7, 5, 3), (10, 12, 3), (16, 16, 3)]
    one = load_images(tmp_path / "imgs" / "0.png", "val")
    assert len(one) == 1 and one.image(0).shape == (10, 12, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "1", "CMYK"])
def test_read_image_converts_to_8bit_rgb_with_a_note(tmp_path, mode):
    rgb = (np.arange(6 * 4 * 3).reshape(6, 4, 3) * 3 % 256).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray((np.arange(24).reshape(6, 4) * 2500).astype(np.uint16))
    else:
        img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("a.tif" if mode == "CMYK" else "a.png")
    img.save(path)
    arr, notes = read_image(path)
    assert arr.dtype == np.uint8 and arr.shape == (6, 4, 3) and len(notes) == 1
    if mode == "I;16":
        assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == round(23 * 2500 * 255 / 65535)


def test_read_image_rgb_is_exact_and_errors_are_clear(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    arr, notes = read_image(tmp_path / "x.png")
    assert np.array_equal(arr, rgb) and notes == []
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match="image not found"):
        read_image(tmp_path / "nope.png")


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="data not found"):
        load_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_images(tmp_path / "empty")
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="must be uint8 of shape"):
        load_images(tmp_path / "f.npz")
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="found images"):
        load_images(tmp_path / "nox.npz")
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="too small to split"):
        load_images(tmp_path / "one.npz", "val")
    with pytest.raises(DataError, match="unknown split"):
        load_images(tmp_path / "one.npz", "test")


def test_tensor_conversions_roundtrip():
    x = np.random.default_rng(2).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    t = to_tensor(x)
    assert t.shape == (2, 3, 4, 5) and float(t.max()) <= 1.0
    assert np.array_equal(to_uint8(t), x)
