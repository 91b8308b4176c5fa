"""Synthetic test images: smooth gradients plus mild noise, like natural 8-bit photos."""

from __future__ import annotations

import numpy as np


def smooth_images(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images of shape (h, w, 3): random-colour gradients with Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(40, 200, 3)
        img = np.stack([a + 60 * xx, b + 60 * yy, c + 40 * xx * yy], -1) + rng.normal(0, 3, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)
