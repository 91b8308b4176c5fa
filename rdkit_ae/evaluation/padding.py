"""How evaluation pads images to a size the model can code, and crops the reconstruction back.

``replicate`` (the default, and what ``rdkit compress`` does): the model pads
on the right and bottom, replicating the border, to a multiple of its own
stride. ``compressai``: as ``compressai.utils.eval_model`` does, zeros centred
around the image up to a multiple of 64 (of ``lcm(64, stride)`` for a model
whose stride does not divide 64), cropped back after decoding. Either way the
rate is counted over the original, unpadded pixels.
"""

from __future__ import annotations

import math
from typing import Callable

import torch.nn.functional as F
from compressai.ops import compute_padding
from torch import Tensor

from rdkit_ae.errors import RdkitError

PAD_MODES = ("replicate", "compressai")
DEFAULT_PAD = "replicate"
COMPRESSAI_MIN_DIV = 2**6  # eval_model: "pad to allow 6 strides of 2"

Unpad = Callable[[Tensor], Tensor]


def check_pad(mode: str) -> str:
    """``mode`` if it is one of :data:`PAD_MODES`, else a one-line :class:`RdkitError`."""
    if mode not in PAD_MODES:
        raise RdkitError(f"padding must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    return mode


def _keep(x: Tensor) -> Tensor:
    return x


def pad_for_eval(x: Tensor, mode: str, stride: int) -> tuple[Tensor, Unpad]:
    """``(input to code, unpad)``: ``unpad(x_hat)`` crops a reconstruction of the input back to ``x``'s size.

    For ``replicate`` the input is ``x`` itself (the model pads and crops).
    """
    if check_pad(mode) == "replicate":
        return x, _keep
    h, w = int(x.size(-2)), int(x.size(-1))
    pad, unpad = compute_padding(h, w, min_div=math.lcm(COMPRESSAI_MIN_DIV, int(stride)))
    if not any(pad):
        return x, _keep
    # Zero padding as in eval_model; contiguous so forward and compress see one memory layout.
    padded = F.pad(x, pad, mode="constant", value=0).contiguous()
    return padded, lambda x_hat: F.pad(x_hat, unpad)
