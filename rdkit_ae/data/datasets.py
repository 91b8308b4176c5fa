"""Torch datasets over :class:`rdkit_ae.data.ImageSet` for training and validation.

Patches: every image is cut to one patch size, ``crop_size`` square, or
smaller on a side where the smallest image of the set is smaller (so images
are never padded or resized). Training takes random crops, validation centre
crops; images already of the patch size are used whole.

Augmentations (training split only): horizontal flip with probability 1/2
and colour jitter ``j``: brightness, contrast and saturation factors drawn
uniformly from ``[1 - j, 1 + j]`` and applied in that order (clamped to
[0, 1] after each, like torchvision's ``ColorJitter(j, j, j)`` without hue).

Randomness: every random number (crop offsets, flip, jitter factors) is a
hash of ``(seed, epoch, image index)``, not a draw from a global generator.
The same epoch therefore sees the same patches whatever the batch size,
DataLoader workers, number of processes or where a resumed run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rdkit_ae.data.sources import ImageSet, image_size, read_image

# SplitMix64 constants (Steele et al. 2014): a cheap, well-mixed counter-based hash.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0xD6E8FEB86659FD93)
_U64 = (1 << 64) - 1
_CACHE_BYTES = 1 << 30  # decoded folder images are kept in memory up to this size
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def item_uniforms(seed: int, epoch: int, index: np.ndarray, streams: int) -> np.ndarray:
    """Uniform [0, 1) numbers of shape (len(index), streams), a pure function of the arguments."""
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _mix(np.array([seed & _U64], dtype=np.uint64) + _GOLDEN)
        key = _mix(key ^ (np.array([epoch & _U64], dtype=np.uint64) * _GOLDEN + _STREAM))
        s = np.arange(streams, dtype=np.uint64)[None, :]
        z = _mix(key ^ _mix(index[:, None] * _GOLDEN + s * _STREAM + np.uint64(1)))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def augment(x: torch.Tensor, u: torch.Tensor, hflip: bool, color_jitter: float) -> torch.Tensor:
    """Flip / jitter a batch (B, 3, H, W) in [0, 1] with per-image uniforms ``u`` (B, 4)."""
    if hflip:
        flip = (u[:, 0] < 0.5).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if color_jitter > 0:
        f = (1.0 + color_jitter * (2.0 * u[:, 1:4] - 1.0)).to(x.dtype)
        b, c, s = (f[:, i].view(-1, 1, 1, 1) for i in range(3))
        x = (x * b).clamp_(0.0, 1.0)
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (c * x + (1.0 - c) * mean).clamp_(0.0, 1.0)
        x = (s * x + (1.0 - s) * _gray(x)).clamp_(0.0, 1.0)
    return x


class ImageDataset(Dataset):
    """Patches of an :class:`ImageSet` as float tensors (3, h, w) in [0, 1].

    ``train=True`` gives random crops and the augmentations; ``False`` gives
    centre crops, unaugmented. :meth:`set_epoch` selects the epoch whose
    random numbers are used. Batches are fetched whole by ``__getitems__``
    (what ``DataLoader`` calls with a ``batch_sampler``), which for in-memory
    arrays is a single gather.
    """

    def __init__(
        self,
        images: ImageSet,
        crop_size: int,
        *,
        train: bool,
        hflip: bool = False,
        color_jitter: float = 0.0,
        seed: int = 0,
    ):
        if len(images) == 0:
            from rdkit_ae.errors import DataError

            raise DataError(f"{images.name}: no images in the {'training' if train else 'validation'} split")
        self.images = images
        self.train = train
        self.hflip = bool(hflip) and train
        self.color_jitter = float(color_jitter) if train else 0.0
        self.seed = int(seed)
        self.epoch = 0
        self._array: torch.Tensor | None = None
        self._cache: dict[int, np.ndarray] = {}
        if images.array is not None:
            arr = images.array if images.array.flags.writeable else images.array.copy()
            self._array = torch.from_numpy(np.ascontiguousarray(arr))
            self.sizes = np.tile(np.asarray(arr.shape[1:3], dtype=np.int64), (len(arr), 1))
        else:
            self.sizes = np.asarray([image_size(p) for p in images.file_list()], dtype=np.int64)
            pixels = int((self.sizes[:, 0] * self.sizes[:, 1]).sum()) * 3
            self._cache_enabled = pixels <= _CACHE_BYTES
        self.patch = (min(crop_size, int(self.sizes[:, 0].min())), min(crop_size, int(self.sizes[:, 1].min())))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def _offsets(self, idx: np.ndarray, u: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ph, pw = self.patch
        room_h = self.sizes[idx, 0] - ph
        room_w = self.sizes[idx, 1] - pw
        if u is None:  # validation: centre crops
            return room_h // 2, room_w // 2
        return (u[:, 4] * (room_h + 1)).astype(np.int64), (u[:, 5] * (room_w + 1)).astype(np.int64)

    def _file_image(self, i: int) -> np.ndarray:
        img = self._cache.get(i)
        if img is None:
            img = read_image(self.images.file_list()[i])[0]
            if self._cache_enabled:
                self._cache[i] = img
        return img

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        u = item_uniforms(self.seed, self.epoch, idx, 6) if self.train else None
        ph, pw = self.patch
        if self._array is not None and self._array.shape[1:3] == (ph, pw):
            batch = self._array[torch.from_numpy(idx)]
        else:
            tops, lefts = self._offsets(idx, u)
            crops = []
            for i, t, left in zip(idx.tolist(), tops.tolist(), lefts.tolist()):
                img = self._array[i].numpy() if self._array is not None else self._file_image(i)
                crops.append(img[t : t + ph, left : left + pw])
            batch = torch.from_numpy(np.stack(crops))
        # NCHW-contiguous float, as a hand-written loop would feed the model.
        x = batch.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        if u is not None and (self.hflip or self.color_jitter > 0):
            x = augment(x, torch.from_numpy(u[:, :4]).to(torch.float32), self.hflip, self.color_jitter)
        return x


def _collate(batch: Any) -> Any:
    return batch  # __getitems__ already returns the batch tensor


def train_batches(
    dataset: Dataset, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1, skip: int = 0
) -> list[list[int]]:
    """This rank's shuffled batches of one epoch, from a DistributedSampler seeded by (seed, epoch).

    With several processes the sampler pads the epoch so every rank gets the
    same number of batches (DDP needs that). ``skip`` drops the batches a
    resumed run has already done.
    """
    from torch.utils.data import DistributedSampler

    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches[skip:]


def val_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's share of the validation set, in order, without padding (metrics are summed over ranks)."""
    order = list(range(rank, n, world_size))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def loader(dataset: Dataset, batches: list[list[int]], *, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over fixed batches (one ``__getitems__`` call per batch).

    It gets its own generator: otherwise each new iterator draws a worker seed
    from the global torch RNG, which also drives quantisation noise, and a
    resumed run would see a different noise stream.
    """
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=torch.Generator(),
    )


def describe(dataset: ImageDataset) -> str:
    src = dataset.images
    kind = (
        "array"
        if src.array is not None
        else f"{len(src)} files under {Path(src.files[0]).parent}"
        if src.files
        else "empty"
    )
    return f"{len(dataset)} images ({kind}), patches {dataset.patch[0]}x{dataset.patch[1]}"
