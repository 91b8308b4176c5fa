"""Image sources for training, evaluation and the codec CLI.

``--data`` accepts ``cifar10`` (torchvision, downloaded on first use), a
folder holding ``cifar-10-batches-py``, a ``.npz`` with a uint8 array ``x`` of
shape (N, H, W, 3), a folder of images (PNG/JPEG/WebP, recursive) or a single
image file.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rdkit_ae.data.npz import load_npz
from rdkit_ae.errors import DataError
from rdkit_ae.limits import env_limit
from rdkit_ae.text import one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
SPLITS = ("train", "val", "all")
MAX_IMAGE_PIXELS_ENV = "RDKIT_MAX_IMAGE_PIXELS"
# Decoding costs ~14 bytes and ~20 ns a pixel: 32 MP is about 0.7 s and 500 MB.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 25
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS  # the old name


def data_root() -> Path:
    """Where ``cifar10`` is downloaded: ``$RDKIT_DATA_DIR`` or ``~/.cache/rdkit-ae``."""
    env = os.environ.get("RDKIT_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rdkit-ae"


@dataclass
class ImageSet:
    """A split of a source: either an in-memory uint8 array or a list of files."""

    name: str
    array: np.ndarray | None = None  # (N, H, W, 3) uint8
    files: list[Path] | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.files or [])

    def names(self) -> list[str]:
        if self.files is not None:
            return [str(p) for p in self.files]
        return [f"{self.name}[{i}]" for i in range(len(self))]

    def image(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i]
        return read_image(self.file_list()[i])[0]

    def file_list(self) -> list[Path]:
        """The files of a file-backed set."""
        if self.files is None:
            raise DataError(f"{self.name}: an in-memory image set has no files")
        return self.files

    def subset(self, index: Sequence[int] | np.ndarray) -> "ImageSet":
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            self.name,
            self.array[index] if self.array is not None else None,
            [self.files[i] for i in index] if self.files is not None else None,
            self.labels[index] if self.labels is not None else None,
        )


# -- reading single images --------------------------------------------------
def image_pixel_limit(max_pixels: int | None = None) -> int:
    """``max_pixels``, else ``$RDKIT_MAX_IMAGE_PIXELS``, else 32 MP (an 8K frame fits)."""
    if max_pixels is not None:
        return int(max_pixels)
    return env_limit(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, "pixels", DataError)


def set_image_pixel_limit(max_pixels: int | None) -> None:
    """Make ``max_pixels`` this process's image limit, as ``$RDKIT_MAX_IMAGE_PIXELS`` would (None: leave it).

    For commands that read images lazily, deep inside a data set (``rdkit eval --max-pixels``).
    """
    if max_pixels is not None:
        if int(max_pixels) < 1:
            raise DataError(f"the image pixel limit must be positive, got {max_pixels}")
        os.environ[MAX_IMAGE_PIXELS_ENV] = str(int(max_pixels))


@contextlib.contextmanager
def _open_image(path: Path, limit: int) -> Iterator[Any]:
    """Open lazily (header only) and refuse more than ``limit`` pixels before anything is decoded.

    A 420 KB PNG can declare 12000x12000 pixels: decoding it first would cost
    seconds and gigabytes before any size check ran.
    """
    from PIL import Image, UnidentifiedImageError

    # Pillow's own bomb check (a warning past MAX_IMAGE_PIXELS, an error past twice that)
    # must not undercut a limit the user raised explicitly.
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours, below, is the stricter check
            with Image.open(path) as img:
                if img.width * img.height > limit:
                    raise DataError(_too_large(path, f"{img.width}x{img.height}", limit))
                yield img
    except Image.DecompressionBombError:
        raise DataError(_too_large(path, None, limit)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable image ({one_line(exc, 200)})") from None


def _too_large(path: Path, size: str | None, limit: int) -> str:
    what = f"image of {size} pixels" if size else "image"
    return (
        f"{path}: refused: {what} is larger than the limit of {limit:,} pixels "
        f"(set {MAX_IMAGE_PIXELS_ENV} to decode larger images)"
    )


def _depth_note(img: Any) -> str | None:
    """A note for 16-bit RGB: Pillow decodes it straight to 8 bits with no sign (read before ``load``)."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if (isinstance(args, str) and ";16" in args) or (
            isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int) and args[1] > 255
        ):
            return f"16-bit {img.mode} converted to 8-bit RGB"
    return None


def _gray16(img: Any, sixteen: bool) -> tuple[np.ndarray, str]:
    arr = np.asarray(img).astype(np.int64)
    top = 65535 if sixteen or img.mode.startswith("I;16") or arr.max() > 255 else 255
    arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    return np.repeat(arr[..., None], 3, axis=2), f"{img.mode} converted to 8-bit RGB"


def _to_rgb(img: Any) -> tuple[np.ndarray, str | None]:
    """8-bit RGB pixels of a loaded 8-bit image, and a note on what the conversion dropped."""
    mode = img.mode
    note = None
    if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in img.info):
        lowest_alpha = img.convert("RGBA").getchannel("A").getextrema()[0]
        dropped = "transparency dropped (alpha is not kept)" if lowest_alpha < 255 else "opaque alpha channel dropped"
        note = f"{mode}: {dropped}"
    elif mode != "RGB":
        note = f"{mode} converted to RGB"
    return np.asarray(img if mode == "RGB" else img.convert("RGB"), dtype=np.uint8), note


def read_image(path: str | Path, *, max_pixels: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Read an image file as 8-bit RGB ``(H, W, 3)``; also return notes on any conversion.

    Images of more than ``max_pixels`` pixels (default :func:`image_pixel_limit`)
    are refused from their header, before decoding.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    with _open_image(p, image_pixel_limit(max_pixels)) as img:
        depth = _depth_note(img)
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            gray, gray_note = _gray16(img, depth is not None)
            return gray, [gray_note]
        arr, note = _to_rgb(img)
    notes = [n for n in (depth, note) if n is not None]
    return np.ascontiguousarray(arr), notes


# -- sources ------------------------------------------------------------------
def _local_cifar10_class():
    """torchvision's CIFAR10 reader for a copy the user points at, without the md5 checks.

    torchvision verifies every batch file against the md5 of the official
    archive and, with ``download=True``, re-downloads on a mismatch. A folder
    given explicitly as ``--data`` is the user's own copy (possibly re-packed,
    subset or generated for tests), so here the files need only exist; they are
    parsed by torchvision's own code. Its batches are Python pickles (CIFAR's
    format): point ``--data`` only at copies you trust.
    """
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            # Class names are not used for compression; a copy may omit batches.meta.
            self.classes = CIFAR10_CLASSES
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return LocalCIFAR10


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar10(root: Path, train: bool, download: bool, local: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    try:
        if local:
            ds = _local_cifar10_class()(str(root), train=train, download=False)
        else:
            ds = CIFAR10(str(root), train=train, download=download)
    except Exception as exc:  # URLError, RuntimeError("Dataset not found"), ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            raise DataError(
                f"{root / 'cifar-10-batches-py'}: not a readable CIFAR-10 copy ({reason[:160]}); it needs "
                "data_batch_1..5 and test_batch in torchvision's format"
            ) from None
        how = "could not be downloaded" if download else "downloading is off"
        raise DataError(
            f"CIFAR-10 is not in {root} and {how} ({reason[:120]}); "
            "point --data at a local copy (a folder with cifar-10-batches-py, a .npz with uint8 'x' (N,H,W,3), "
            "or a folder of images) or set RDKIT_DATA_DIR to where cifar-10-batches-py lives"
        ) from None
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _split_index(n: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    if split == "all":
        return np.arange(n)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    n_val = max(1, int(math.ceil(n * val_fraction)))
    if n_val >= n:
        raise DataError(f"a source of {n} images is too small to split off a validation set")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_val] if split == "val" else perm[n_val:])


def load_images(
    spec: str | Path,
    split: str = "all",
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    start: int = 0,
    limit: int | None = None,
    download: bool = True,
) -> ImageSet:
    """Resolve ``--data`` and return one split of it: ``limit`` images from the ``start``-th on, if given.

    ``cifar10`` (or a folder holding ``cifar-10-batches-py``) uses the official
    train/test split ("val" is the test set); other sources are split
    deterministically by ``seed`` with ``val_fraction`` of the images in "val".
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    s = str(spec)
    p = Path(s).expanduser()
    if s == "cifar10" or (p.is_dir() and (p / "cifar-10-batches-py").is_dir()):
        root = data_root() if s == "cifar10" else p
        local = s != "cifar10"  # an explicit folder is a local copy: read it, never download into it
        if split == "all":
            xs = [_cifar10(root, t, download, local) for t in (True, False)]
            out = ImageSet("cifar10", np.concatenate([a for a, _ in xs]), labels=np.concatenate([b for _, b in xs]))
        else:
            x, y = _cifar10(root, split == "train", download, local)
            out = ImageSet(f"cifar10-{'train' if split == 'train' else 'test'}", x, labels=y)
        index = np.arange(len(out))
    else:
        if p.is_file() and p.suffix.lower() == ".npz":
            x, labels = load_npz(p)
            out = ImageSet(p.stem, x, labels=labels)
        elif p.is_dir():
            out = ImageSet(p.name, files=_image_files(p))
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out, split = ImageSet(p.stem, files=[p]), "all"
        elif p.exists():
            raise DataError(f"{p}: --data must be cifar10, a .npz, an image folder or an image file")
        else:
            raise DataError(f"data not found: {s} (use cifar10, a .npz file, an image folder or an image file)")
        index = _split_index(len(out), split, val_fraction, seed)
    index = index[max(0, int(start)) :]
    if limit is not None:
        index = index[: max(0, int(limit))]
    return out.subset(index) if len(index) != len(out) else out


def image_size(path: str | Path, *, max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels.

    Refuses images over ``max_pixels`` (default :func:`image_pixel_limit`), as :func:`read_image` would.
    """
    with _open_image(Path(path), image_pixel_limit(max_pixels)) as img:
        return int(img.height), int(img.width)


def iter_images(image_set: ImageSet) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, uint8 (H, W, 3))`` at native size, reading files one at a time."""
    for name, i in zip(image_set.names(), range(len(image_set))):
        yield name, image_set.image(i)


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) or (H, W, 3) -> float tensor (N, 3, H, W) in [0, 1]."""
    import torch

    arr = images[None] if images.ndim == 3 else images
    # contiguous NCHW: a channels-last view would make convolutions take another path
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def to_uint8(x) -> np.ndarray:
    """Float tensor (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3), rounded and clamped."""
    import torch

    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
