"""The sweep's images: loading a DataSpec, hashing content for cache keys, training slices on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from rdkit_ae.bench.spec_tables import DataSpec, SpecError
from rdkit_ae.data.sources import ImageSet, load_images
from rdkit_ae.errors import RdkitError


def _slice(n: int, ds: DataSpec) -> np.ndarray:
    return np.arange(n)[slice(ds.start, ds.stop)]


def load_data(ds: DataSpec, val_fraction: float = 0.1, seed: int = 0) -> ImageSet:
    """The ImageSet a DataSpec names (its split, then its slice)."""
    images = load_images(ds.path, ds.split, val_fraction=val_fraction, seed=seed)
    index = _slice(len(images), ds)
    if len(index) == 0:
        raise SpecError(f"{ds.describe()}: the slice selects no images (the source has {len(images)})")
    return images.subset(index) if len(index) != len(images) else images


def content_hash(images: ImageSet) -> str:
    """Hash of an ImageSet's pixels (arrays) or files' bytes, so caches follow content, not paths."""
    h = hashlib.sha256()
    if images.array is not None:
        h.update(str(images.array.shape).encode())
        h.update(np.ascontiguousarray(images.array).tobytes())
    else:
        for f in images.files or []:
            h.update(f.name.encode())
            h.update(Path(f).read_bytes())
    return h.hexdigest()


def training_data(ds: DataSpec, out: Path) -> tuple[str, str]:
    """(``--data`` value for train, content key). A slice is materialised as a .npz under OUT/data."""
    if ds.path == "cifar10" and ds.start is None and ds.stop is None:
        return "cifar10", "cifar10"
    if ds.start is None and ds.stop is None and ds.split == "all":
        return ds.path, content_hash(load_images(ds.path, "all"))
    images = load_data(ds)
    if images.array is None:
        raise SpecError(
            f"data.train {ds.describe()}: start/stop/split for training need an array source (.npz or cifar10)"
        )
    key = content_hash(images)
    target = out / "data" / f"train-{key[:16]}.npz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.tmp.npz")
        arrays = {"x": images.array} | ({"y": images.labels} if images.labels is not None else {})
        np.savez(tmp, **arrays)
        tmp.replace(target)
    return str(target), key


def overlap_notes(train: DataSpec, evaluation: DataSpec, base: Path | None = None) -> list[str]:
    """A warning when evaluation images are also training images (same source, overlapping slices).

    Paths in the warning are relative to ``base`` (the spec's folder): it goes into the reports.
    """
    if train.path != evaluation.path or train.split != "all" or evaluation.split != "all":
        return []
    try:
        n = len(load_data(DataSpec(train.path)))
    except RdkitError:
        return []
    shared = set(_slice(n, train).tolist()) & set(_slice(n, evaluation).tolist())
    if shared:
        return [
            f"WARNING: {len(shared)} evaluation image(s) are also training images "
            f"({train.describe(base=base)} vs {evaluation.describe(base=base)})"
        ]
    return []
