"""Which region of an image ``rdkit compare`` shows: a given box, or the most detailed square of a size.

Coding artefacts show where an image has detail (edges, texture), not in a
flat sky, so the default crop is the square window whose luma gradients are
largest (sum of |dx| + |dy|), chosen on the original and shown for every
codec. Boxes are ``(x, y, w, h)`` in pixels, x from the left, y from the top.
"""

from __future__ import annotations

import numpy as np

from rdkit_ae.errors import RdkitError

Box = tuple[int, int, int, int]


def parse_box(text: str, option: str = "--crop-box") -> Box:
    """``"x,y,w,h"`` -> a box (one-line error unless four whole numbers, x, y >= 0 and w, h >= 1)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise RdkitError(f"{option}: give x,y,w,h as four whole numbers, got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise RdkitError(f"{option}: x and y must be >= 0 and w and h >= 1, got {text!r}")
    return x, y, w, h


def check_box(box: Box, height: int, width: int, name: str, option: str = "--crop-box") -> Box:
    """The box, if it lies inside a ``height`` x ``width`` image (one-line error naming the image if not)."""
    x, y, w, h = box
    if x + w > width or y + h > height:
        raise RdkitError(
            f"{option} {x},{y},{w},{h} does not fit {name} ({width}x{height} pixels): x + w must be <= {width} "
            f"and y + h <= {height}"
        )
    return box


def _energy(image: np.ndarray) -> np.ndarray:
    """Per-pixel |dx| + |dy| of the luma (BT.601 weights), same size as the image."""
    luma = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    e = np.zeros_like(luma)
    e[:, 1:] += np.abs(np.diff(luma, axis=1))
    e[1:, :] += np.abs(np.diff(luma, axis=0))
    return e


def detail_box(image: np.ndarray, side: int) -> Box:
    """The ``side`` x ``side`` window (clipped to the image) with the most gradient energy; ties go to the
    top-most, then left-most window. Candidates are on a grid of ``side // 8`` pixels (at least 1)."""
    if side < 1:
        raise RdkitError(f"--crop must be at least 1 pixel, got {side}")
    height, width = image.shape[:2]
    w, h = min(side, width), min(side, height)
    if (w, h) == (width, height):
        return 0, 0, width, height
    table = np.zeros((height + 1, width + 1))
    table[1:, 1:] = _energy(image).cumsum(0).cumsum(1)  # summed-area table: any window's sum in four lookups
    step = max(1, side // 8)
    ys = np.unique(np.r_[np.arange(0, height - h + 1, step), height - h])
    xs = np.unique(np.r_[np.arange(0, width - w + 1, step), width - w])
    sums = table[ys[:, None] + h, xs[None, :] + w] - table[ys[:, None], xs[None, :] + w]
    sums = sums - table[ys[:, None] + h, xs[None, :]] + table[ys[:, None], xs[None, :]]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(xs[j]), int(ys[i]), w, h


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return image[y : y + h, x : x + w]
