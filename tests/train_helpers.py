"""Small generated data and tiny recipes for the training tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

# Tiny models on 16x16 patches: a training step takes milliseconds.
TINY_CONV = ["encoder.channels=[8, 16]", "encoder.latent_channels=4", "train.batch_size=8", "train.crop_size=16"]
TINY_FACTORIZED = ["encoder.N=8", "encoder.M=12", "train.batch_size=8", "train.crop_size=16"]
FAST = dict(threads=1, quiet=True)


def make_npz(path: Path, n: int = 40, size: int = 16, seed: int = 0, labels: bool = False) -> Path:
    """Smooth-ish random images (gradients + noise), uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    base = (
        rng.uniform(0, 1, (n, 1, 1, 3)) * yy[None, :, :, None] + rng.uniform(0, 1, (n, 1, 1, 3)) * xx[None, :, :, None]
    )
    x = np.clip(base * 200 + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)
    arrays = {"x": x}
    if labels:
        arrays["y"] = rng.integers(0, 10, n)
    np.savez(path, **arrays)
    return path


def make_png_folder(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """PNG files of the given (h, w) sizes in two sub-folders; returns the pixel arrays."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = []
    for i, (h, w) in enumerate(sizes):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i:02d}.png")
        arrays.append(arr)
    return arrays


def make_fake_cifar10(root: Path, per_batch: int = 6, test: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py`` in the official layout: pickled dicts with a (N, 3072) uint8 'data' row per image.

    Returns the (train, test) images as (N, 32, 32, 3) uint8, as torchvision should read them back.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def write(name: str, n: int) -> np.ndarray:
        hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        rows = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR stores R plane, G plane, B plane per row
        entry = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rows,
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        return hwc

    train = np.concatenate([write(f"data_batch_{i}", per_batch) for i in range(1, 6)])
    test_x = write("test_batch", test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_cases_per_batch": per_batch,
                "num_vis": 3072,
            },
            f,
            protocol=2,
        )
    return train, test_x


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ}"
