"""Rate and quality metrics on 8-bit RGB: bpp, compression ratio, PSNR, SSIM and MS-SSIM per image.

The quality metrics take uint8 arrays of shape (N, H, W, 3) (the original and the
reconstruction already rounded to 8 bits), so learned and classical codecs are
measured the same way. SSIM and MS-SSIM come from pytorch-msssim with
``data_range=255``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MAX_VALUE = 255.0
BITS_PER_PIXEL_RGB = 24.0
SSIM_MIN_SIDE = 11  # pytorch-msssim's default Gaussian window; below it SSIM is not defined here
MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-tap window need min side > (11 - 1) * 2**4 = 160


def bpp_from_bytes(nbytes: float, height: int, width: int) -> float:
    """Bits per pixel of ``nbytes`` for an image of ``height`` x ``width`` (the original, unpadded size)."""
    return 8.0 * nbytes / (height * width)


def cr_from_bpp(bpp: float | None) -> float | None:
    """Compression ratio of 8-bit RGB: 24 / bpp (None for a zero or unknown rate)."""
    return BITS_PER_PIXEL_RGB / bpp if bpp else None


class CodedSize:
    """For a record of one coded image (``nbytes``, ``height``, ``width``): its bpp and compression ratio."""

    nbytes: int
    height: int
    width: int

    @property
    def bpp(self) -> float:
        return bpp_from_bytes(self.nbytes, self.height, self.width)

    @property
    def cr(self) -> float | None:
        return cr_from_bpp(self.bpp)


def _check_pair(original: np.ndarray, decoded: np.ndarray) -> None:
    if original.shape != decoded.shape:
        raise ValueError(f"shape mismatch: {original.shape} vs {decoded.shape}")
    if original.dtype != np.uint8 or decoded.dtype != np.uint8:
        raise ValueError("metrics take uint8 images (round reconstructions to 8 bits first)")
    if original.ndim != 4 or original.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got {original.shape}")


def mse(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Mean squared error per image, on the 0..255 scale (float64, shape (N,))."""
    _check_pair(original, decoded)
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    return (diff * diff).reshape(len(diff), -1).mean(axis=1)


def psnr_from_mse(value: float) -> float:
    """PSNR in dB with MAX 255; ``inf`` for identical images."""
    return math.inf if value <= 0 else 10.0 * math.log10(MAX_VALUE**2 / value)


def psnr(original: np.ndarray, decoded: np.ndarray) -> list[float]:
    return [psnr_from_mse(float(m)) for m in mse(original, decoded)]


def _as_float_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)


def ssim(original: np.ndarray, decoded: np.ndarray) -> list[float | None]:
    """SSIM per image (pytorch-msssim, 11x11 Gaussian window); None where a side is under 11 pixels."""
    from pytorch_msssim import ssim as _ssim

    _check_pair(original, decoded)
    if min(original.shape[1:3]) < SSIM_MIN_SIDE:
        return [None] * len(original)
    out = _ssim(_as_float_tensor(original), _as_float_tensor(decoded), data_range=MAX_VALUE, size_average=False)
    return [float(v) for v in out]


def ms_ssim(original: np.ndarray, decoded: np.ndarray) -> list[float | None]:
    """MS-SSIM per image; None where the smaller side is 160 pixels or less (too small for 5 scales)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(original, decoded)
    if min(original.shape[1:3]) < MS_SSIM_MIN_SIDE:
        return [None] * len(original)
    out = _ms_ssim(_as_float_tensor(original), _as_float_tensor(decoded), data_range=MAX_VALUE, size_average=False)
    return [float(v) for v in out]


def quality(original: np.ndarray, decoded: np.ndarray, metrics: Sequence[str] = ()) -> list[dict[str, float | None]]:
    """``[{"mse", "psnr", "ssim", "ms_ssim", ...}, ...]`` for a batch of same-size images; ``metrics`` adds
    perceptual ones by name (:mod:`.perceptual`: ``haarpsi``, ``ms-gmsd``, ``vsi``, ``mdsi``, ``lpips``)."""
    m = mse(original, decoded)
    s = ssim(original, decoded)
    ms = ms_ssim(original, decoded)
    rows: list[dict[str, float | None]] = [
        {"mse": float(m[i]), "psnr": psnr_from_mse(float(m[i])), "ssim": s[i], "ms_ssim": ms[i]} for i in range(len(m))
    ]
    if metrics:
        from rdkit_ae.evaluation.perceptual import perceptual

        for row, extra in zip(rows, perceptual(original, decoded, metrics)):
            row.update(extra)
    return rows
