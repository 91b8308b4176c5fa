"""Group an image set into batches of one size, so that small images are coded together."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rdkit_ae.data.sources import iter_images

MAX_BATCHED_PIXELS = 256 * 256  # larger images are coded one at a time (memory, and Kodak sizes vary)


def same_size_batches(images, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (names, uint8 (B, H, W, 3)): consecutive images of one small size together."""
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for name, img in iter_images(images):
        h, w = img.shape[:2]
        fits = arrays and arrays[0].shape == img.shape and len(arrays) < batch_size and h * w <= MAX_BATCHED_PIXELS
        if arrays and not fits:
            yield names, np.stack(arrays)
            names, arrays = [], []
        names.append(name)
        arrays.append(img)
    if arrays:
        yield names, np.stack(arrays)
