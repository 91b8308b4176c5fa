"""Exact convolutions on integer float64 values: one GEMM per kernel tap on a strided view, no im2col copy.

Every product and partial sum is an integer below 2**53 (the caller's
:class:`~rdkit_ae.plugin.exact.IntegerNetwork` proves it from the weights),
so each result is exact whatever the order of the GEMMs and of their inner
sums: the same integers on every CPU, SIMD kernel, thread count and BLAS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _accumulate(x: Tensor, w_taps: list[tuple[Tensor, int]], start: Tensor, rows: int, cols: int, pitch: int) -> Tensor:
    """``sum_tap w_tap @ x[:, off:off + L]`` over a flattened, padded input, without an im2col copy.

    ``x`` is (C, padded rows * pitch); output position (r, c) reads input
    ``r * pitch + c + off`` for each tap, so one GEMM per tap on a strided
    view of ``x`` computes the whole output (plus ``pitch - cols`` junk
    columns per row, dropped). Integer products and sums below 2**53 make
    the order of the GEMMs and of their inner sums irrelevant.
    """
    span = (rows - 1) * pitch + cols
    out = start[:, None].expand(-1, rows * pitch).clone()
    view = out[:, :span]
    for w, off in w_taps:
        torch.addmm(view, w, x[:, off : off + span], out=view)
    return out.reshape(-1, rows, pitch)[:, :, :cols]


def taps_conv2d(x: Tensor, weight: Tensor, start: Tensor, padding: tuple[int, int]) -> Tensor:
    """Stride-1 ``conv2d(x, weight) + start`` on integer float64 values, one GEMM per non-zero tap (exact)."""
    out_ch, _, kh, kw = weight.shape
    ph, pw = padding
    rows, cols = x.size(-2) + 2 * ph - kh + 1, x.size(-1) + 2 * pw - kw + 1
    pitch = x.size(-1) + 2 * pw
    taps = [(dy, dx) for dy in range(kh) for dx in range(kw) if bool(weight[:, :, dy, dx].any())]
    outputs = []
    for image in x:
        flat = F.pad(image, (pw, pw, ph, ph)).reshape(image.size(0), -1)
        w_taps = [(weight[:, :, dy, dx], dy * pitch + dx) for dy, dx in taps]
        outputs.append(_accumulate(flat, w_taps, start, rows, cols, pitch))
    return outputs[0][None] if len(outputs) == 1 else torch.stack(outputs)


def taps_conv_transpose2d(
    x: Tensor, weight: Tensor, start: Tensor, stride: tuple[int, int], padding: tuple[int, int], extra: tuple[int, int]
) -> Tensor:
    """``conv_transpose2d(x, weight) + start`` on integer float64 values: one stride-1 correlation per output phase.

    Output row ``Y = s * q + r`` gets kernel rows ``ky`` with ``(r + p - ky) % s == 0`` from input row
    ``q + (r + p - ky) // s``: each phase (r_y, r_x) is a small stride-1 correlation over the input.
    """
    _, out_ch, kh, kw = weight.shape
    (sy, sx), (py, px) = stride, padding
    height, width = x.shape[-2:]
    out_h = (height - 1) * sy - 2 * py + kh + extra[0]
    out_w = (width - 1) * sx - 2 * px + kw + extra[1]
    out = x.new_empty(x.size(0), out_ch, out_h, out_w)
    for ry in range(min(sy, out_h)):
        rows_taps = [(ky, (ry + py - ky) // sy) for ky in range(kh) if (ry + py - ky) % sy == 0]
        rows = len(range(ry, out_h, sy))
        for rx in range(min(sx, out_w)):
            cols_taps = [(kx, (rx + px - kx) // sx) for kx in range(kw) if (rx + px - kx) % sx == 0]
            cols = len(range(rx, out_w, sx))
            if not rows_taps or not cols_taps:
                out[:, :, ry::sy, rx::sx] = start[:, None, None]
                continue
            out[:, :, ry::sy, rx::sx] = _phase(x, weight, start, rows_taps, cols_taps, rows, cols)
    return out


def _phase(x: Tensor, weight: Tensor, start: Tensor, rows_taps, cols_taps, rows: int, cols: int) -> Tensor:
    """One output phase of a transposed convolution: input offsets (dy, dx) per kernel tap, padded as needed."""
    height, width = x.shape[-2:]
    dys, dxs = [d for _, d in rows_taps], [d for _, d in cols_taps]
    top, left = max(0, -min(dys)), max(0, -min(dxs))
    bottom, right = max(0, rows - 1 + max(dys) - (height - 1)), max(0, cols - 1 + max(dxs) - (width - 1))
    pitch = width + left + right
    outputs = []
    for image in x:
        flat = F.pad(image, (left, right, top, bottom)).reshape(image.size(0), -1)
        w_taps = [
            (weight[:, :, ky, kx].t(), (dy + top) * pitch + dx + left) for ky, dy in rows_taps for kx, dx in cols_taps
        ]
        outputs.append(_accumulate(flat, w_taps, start, rows, cols, pitch))
    return outputs[0][None] if len(outputs) == 1 else torch.stack(outputs)


def taps_conv2d_parity(x: Tensor, weight: Tensor, start: Tensor, padding: tuple[int, int], parity: int) -> Tensor:
    """Stride-1 ``conv2d(x, weight) + start`` only where ``(row + col) % 2 == parity``: (B, out, rows, cols // 2).

    The outputs of each row are kept in column order, as CompressAI's
    checkerboard ``unembed`` lays out one half. With an odd row pitch the
    flat index of ``(r, c)`` has the parity of ``r + c``, so the wanted
    outputs are every other flat position, and each tap reads every other
    input: one GEMM per tap on a contiguous slice of the input's even or odd
    flat positions (half the work of the full convolution, exact as it is).
    """
    _, _, kh, kw = weight.shape
    ph, pw = padding
    rows, cols = x.size(-2) + 2 * ph - kh + 1, x.size(-1) + 2 * pw - kw + 1
    if cols % 2:
        raise ValueError(f"a checkerboard half needs an even width, not {cols}")
    extra = 1 - (x.size(-1) + 2 * pw) % 2  # one more zero column makes the pitch odd
    pitch = x.size(-1) + 2 * pw + extra
    last = (rows - 1) * pitch + cols - 1
    n = (last - parity) // 2 + 1
    taps = [(dy, dx) for dy in range(kh) for dx in range(kw) if bool(weight[:, :, dy, dx].any())]
    r = torch.arange(rows)[:, None]
    flat_k = (r * pitch + (parity + r) % 2 + 2 * torch.arange(cols // 2)[None, :] - parity) // 2
    outputs = []
    for image in x:
        flat = F.pad(image, (pw, pw + extra, ph, ph)).reshape(image.size(0), -1)
        halves = (flat[:, 0::2].contiguous(), flat[:, 1::2].contiguous())
        out = start[:, None].expand(-1, n).clone()
        for dy, dx in taps:
            off = parity + dy * pitch + dx
            source = halves[off % 2]
            torch.addmm(out, weight[:, :, dy, dx], source[:, off // 2 : off // 2 + n], out=out)
        outputs.append(out[:, flat_k])
    return torch.stack(outputs)
