"""Training data: patches, augmentation, image folders, CIFAR-10 on disk and the offline error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import FAST, TINY_CONV, make_fake_cifar10, make_png_folder

from rdkit_ae.data.datasets import ImageDataset, augment, item_uniforms, train_batches, val_batches
from rdkit_ae.data.sources import ImageSet, load_images
from rdkit_ae.errors import DataError
from rdkit_ae.training import train


def _array(n=12, h=20, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_random_numbers_depend_only_on_seed_epoch_and_image():
    u = item_uniforms(3, 1, np.arange(50), 6)
    assert u.shape == (50, 6) and (u >= 0).all() and (u < 1).all()
    assert np.array_equal(item_uniforms(3, 1, np.array([41, 7]), 6), u[[41, 7]])
    assert not np.array_equal(item_uniforms(3, 2, np.arange(50), 6), u)
    assert not np.array_equal(item_uniforms(4, 1, np.arange(50), 6), u)


def test_train_crops_are_random_per_epoch_and_reproducible_val_crops_are_central():
    x = _array()
    ds = ImageDataset(ImageSet("t", x), 16, train=True, seed=0)
    assert ds.patch == (16, 16)
    e0 = ds.__getitems__([0, 1, 2, 3])
    assert e0.shape == (4, 3, 16, 16) and e0.dtype == torch.float32 and e0.is_contiguous()
    # each patch is a real window of its image
    for i in range(4):
        img = torch.from_numpy(x[i]).permute(2, 0, 1).float() / 255
        assert any(torch.equal(e0[i], img[:, t : t + 16, c : c + 16]) for t in range(5) for c in range(9))
    assert torch.equal(ds[2], e0[2])  # same image, same epoch: same patch, whatever the batch
    ds.set_epoch(1)
    assert not torch.equal(ds.__getitems__([0, 1, 2, 3]), e0)
    val = ImageDataset(ImageSet("v", x), 16, train=False)
    assert torch.equal(val[5], torch.from_numpy(x[5, 2:18, 4:20]).permute(2, 0, 1).float() / 255)
    # the patch never exceeds the smallest image
    assert ImageDataset(ImageSet("s", _array(h=12, w=40)), 16, train=True).patch == (12, 16)


def test_augmentations_flip_and_jitter_only_in_training():
    x = _array(n=64, h=8, w=8)
    plain = ImageDataset(ImageSet("p", x), 8, train=True, seed=0)
    flipped = ImageDataset(ImageSet("f", x), 8, train=True, hflip=True, seed=0)
    a, b = plain.__getitems__(range(64)), flipped.__getitems__(range(64))
    same = [torch.equal(a[i], b[i]) for i in range(64)]
    mirrored = [torch.equal(a[i].flip(-1), b[i]) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and 16 < sum(mirrored) < 48
    jit = ImageDataset(ImageSet("j", x), 8, train=True, color_jitter=0.1, seed=0).__getitems__(range(64))
    assert 0 <= jit.min() and jit.max() <= 1 and not torch.equal(jit, a)
    assert (jit - a).abs().mean() < 0.1  # mild
    val = ImageDataset(ImageSet("v", x), 8, train=False, hflip=True, color_jitter=0.5)
    assert torch.equal(val.__getitems__(range(64)), a)
    # jitter factors of exactly 1 change nothing
    u = torch.full((3, 4), 0.5)
    y = torch.rand(3, 3, 8, 8)
    assert torch.allclose(augment(y, u, False, 0.3), y, atol=1e-6)


def test_batches_cover_the_epoch_and_shard_across_ranks():
    ds = ImageDataset(ImageSet("b", _array(n=10, h=4, w=4)), 4, train=True)
    one = train_batches(ds, 4, epoch=0, seed=0)
    assert [len(b) for b in one] == [4, 4, 2] and sorted(sum(one, [])) == list(range(10))
    assert train_batches(ds, 4, 0, 0, skip=1) == one[1:]
    assert train_batches(ds, 4, 1, 0) != one
    r0, r1 = (train_batches(ds, 4, 0, 0, rank=r, world_size=2) for r in (0, 1))
    assert len(r0) == len(r1) and set(sum(r0, [])) | set(sum(r1, [])) == set(range(10))
    assert sorted(sum(val_batches(10, 3, 0, 2) + val_batches(10, 3, 1, 2), [])) == list(range(10))


def test_png_folder_with_crops_trains_and_evaluates_at_native_size(tmp_path):
    folder = tmp_path / "pngs"
    sizes = [(24, 40), (30, 20), (20, 20), (36, 28)] * 5
    make_png_folder(folder, sizes)
    out = tmp_path / "run"
    res = train("conv-mse", folder, out, overrides=TINY_CONV, epochs=1, val_fraction=0.2, **FAST)
    assert res.epochs == 1 and res.steps == 2  # 16 training images, batch 8
    ev = json.loads((out / "eval.json").read_text())
    assert ev["summary"]["n_images"] == 4  # full-size validation images, not patches
    assert ev["summary"]["bpp"] > 0 and ev["summary"]["psnr"] > 0


def test_fake_cifar10_folder_in_torchvision_format(tmp_path):
    train_x, test_x = make_fake_cifar10(tmp_path)
    tr = load_images(tmp_path, "train")
    va = load_images(tmp_path, "val")
    assert np.array_equal(tr.array, train_x) and np.array_equal(va.array, test_x)
    assert tr.labels.shape == (30,) and va.name == "cifar10-test"
    res = train(
        "conv-mse",
        tmp_path,
        tmp_path / "run",
        overrides=TINY_CONV + ["train.crop_size=32"],
        epochs=1,
        limit_train=16,
        evaluate=False,
        **FAST,
    )
    assert res.steps == 2 and res.metrics[0]["val_bpp"] == pytest.approx(2.0)
    # an incomplete copy is named as such
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="not a readable CIFAR-10 copy"):
        load_images(tmp_path, "train")


def test_cifar10_offline_error_is_one_clear_line(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setenv("RDKIT_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as info:
        load_images("cifar10", "train", download=False)
    msg = str(info.value)
    assert "\n" not in msg and "downloading is off" in msg and "point --data at a local copy" in msg
    assert "RDKIT_DATA_DIR" in msg
    # The real download path, sent to a closed local port so it fails at once, offline or not.
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="could not be downloaded") as info:
        train("conv-mse", "cifar10", tmp_path / "run", overrides=TINY_CONV, **FAST)
    assert "\n" not in str(info.value)
