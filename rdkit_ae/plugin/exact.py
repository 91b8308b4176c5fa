"""Integer networks: the entropy-parameter path computed with the same bits on every machine.

The decoder recomputes each latent's scale (and mean, and the checkerboard
context) from decoded symbols. With float convolutions, a last-bit difference
between two machines (AVX-512 vs AVX2 kernels, thread counts, GPU vs CPU)
picks another CDF and desynchronises the rANS decoder: the image comes back
as garbage. An :class:`IntegerNetwork` is a float ``nn.Sequential`` of
convolutions and (leaky) ReLUs converted to integer arithmetic (Balle,
Johnston and Minnen, "Integer networks for data compression with
latent-variable models", ICLR 2019), post-training:

- activations live on a fixed dyadic grid, ``2**-ACT_BITS``, as integers
  clamped to ``+-ACT_LIMIT``;
- weights are ``round(w * 2**WEIGHT_BITS)``, biases ``round(b * 2**(ACT_BITS + WEIGHT_BITS))``;
- a convolution is computed in float64 on these integers: every product and
  every partial sum is an integer below 2**53 (checked from the weights when
  they are converted or loaded), so the result is exact in any summation
  order, on any CPU, SIMD kernel, thread count, BLAS or GPU;
- its output is rounded back to the grid (``floor((acc + half) / 2**WEIGHT_BITS)``,
  exact in float64), a leaky ReLU multiplies by a dyadic slope (``k / 2**16``)
  and rounds the same way;
- convolutions run as one GEMM per kernel tap on a strided view of the
  padded input (transposed ones per output phase), which is exact for the
  same reason and about twice as fast as PyTorch's float64 im2col.

Conversion is deterministic (elementwise rounding of float32 weights), so an
old checkpoint converts to the same integers on every machine.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.layers import MaskedConv2d
from torch import Tensor

from rdkit_ae.errors import CheckpointError, PluginError
from rdkit_ae.plugin.taps import taps_conv2d, taps_conv2d_parity, taps_conv_transpose2d

ACT_BITS = 8  # activations on a 2**-8 grid: means and scales to 1/256
WEIGHT_BITS = 12  # weights on a 2**-12 grid
SLOPE_BITS = 16  # leaky ReLU slopes as integers over 2**16
ACT_LIMIT = float(1 << 24)  # |activation| <= 2**24 grid steps (65536.0): saturates far beyond trained ranges
EXACT_LIMIT = float(1 << 53)  # float64 holds every integer below this exactly
MAX_WEIGHT = (1 << 31) - 1  # integer weights are stored as int32


def to_grid(x: Tensor) -> Tensor:
    """Float values -> integers on the ``2**-ACT_BITS`` grid (float64), clamped to ``+-ACT_LIMIT``.

    Deterministic for a given float input: a multiplication by a power of two and a rounding.
    """
    return torch.round(x.double() * (1 << ACT_BITS)).clamp_(-ACT_LIMIT, ACT_LIMIT)


def from_grid(x: Tensor) -> Tensor:
    """Grid integers -> their real values (float64, exact)."""
    return x / (1 << ACT_BITS)


@contextlib.contextmanager
def exact_kernels(device: torch.device) -> Iterator[None]:
    """Kernels that sum integer float64 products exactly: no cuDNN (FFT/Winograd algorithms) and no TF32 on CUDA.

    On the CPU float64 convolutions are im2col + BLAS dgemm, exact on integers
    below 2**53 whatever the order; on CUDA the native (non-cuDNN) path is the same.
    """
    if device.type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=False, allow_tf32=False):
        yield


class IntegerNetwork(nn.Module):
    """A float ``nn.Sequential`` (Conv2d, ConvTranspose2d, MaskedConv2d, ReLU, LeakyReLU) in exact integer arithmetic.

    Built empty beside the float network; :meth:`convert` fills its integer
    weights from the float ones (when the entropy tables are built), and
    they are saved in the checkpoint with the tables. ``forward`` takes and
    returns integers on the activation grid (float64 tensors); use
    :func:`to_grid` / :func:`from_grid` at the edges.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        layers = list(network) if isinstance(network, nn.Sequential) else [network]
        self.ops: list[tuple] = []
        for i, layer in enumerate(layers):
            self.ops.append(self._op(i, layer))
        self._network = [network]  # a plain list: the float weights belong to their owner, not to this module
        self._converted: dict[int, tuple] = {}  # per layer: the buffers and versions, device, float64 w and start

    def _op(self, i: int, layer: nn.Module) -> tuple:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if layer.padding_mode != "zeros" or not isinstance(layer.padding, tuple):
                raise PluginError(f"integer network: layer {i} ({type(layer).__name__}) needs zero padding")
            self.register_buffer(f"w{i}", torch.empty(0, dtype=torch.int32))
            self.register_buffer(f"b{i}", torch.empty(0, dtype=torch.int64))
            kind = "deconv" if isinstance(layer, nn.ConvTranspose2d) else "conv"
            extra = tuple(layer.output_padding) if kind == "deconv" else ()
            return (kind, i, tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation), layer.groups, extra)
        if isinstance(layer, nn.ReLU):
            return ("relu", i)
        if isinstance(layer, nn.LeakyReLU):
            slope = round(float(layer.negative_slope) * (1 << SLOPE_BITS))
            return ("leaky", i, slope)
        if isinstance(layer, nn.Identity):
            return ("identity", i)
        raise PluginError(
            f"integer network: layer {i} is a {type(layer).__name__}; only Conv2d, ConvTranspose2d, "
            "ReLU, LeakyReLU and Identity can be made exact"
        )

    @property
    def ready(self) -> bool:
        """Whether integer weights are there (converted, or loaded from a checkpoint)."""
        return all(getattr(self, f"w{op[1]}").numel() > 0 for op in self.ops if op[0] in ("conv", "deconv"))

    # -- conversion --------------------------------------------------------------
    @torch.no_grad()
    def convert(self) -> None:
        """Integer weights from the float network's current ones (deterministic: elementwise rounding)."""
        layers = list(self._network[0]) if isinstance(self._network[0], nn.Sequential) else [self._network[0]]
        for op in self.ops:
            if op[0] not in ("conv", "deconv"):
                continue
            layer = layers[op[1]]
            weight = layer.weight.detach()
            if isinstance(layer, MaskedConv2d):  # the mask is applied in forward; bake it in
                weight = weight * layer.mask
            w = torch.round(weight.double() * (1 << WEIGHT_BITS))
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(w.size(1 if op[0] == "deconv" else 0))
            b = torch.round(bias.double() * (1 << (ACT_BITS + WEIGHT_BITS)))
            if not bool(torch.isfinite(w).all()) or float(w.abs().max()) > MAX_WEIGHT:
                raise PluginError(f"integer network: layer {op[1]} has weights too large to make exact")
            setattr(self, f"w{op[1]}", w.to(torch.int32))
            setattr(self, f"b{op[1]}", b.to(torch.int64))
        self.check()

    def check(self, where: str = "integer network") -> None:
        """Refuse integer weights whose sums could reach 2**53 (the exactness proof), or of the wrong shapes."""
        for op in self.ops:
            if op[0] not in ("conv", "deconv"):
                continue
            w, b = getattr(self, f"w{op[1]}"), getattr(self, f"b{op[1]}")
            if w.dtype != torch.int32 or b.dtype != torch.int64 or w.dim() != 4 or b.dim() != 1:
                raise CheckpointError(f"{where}: layer {op[1]} has integer weights of the wrong type or shape")
            out_dim = 1 if op[0] == "deconv" else 0
            if b.numel() != w.size(out_dim) * (op[5] if op[0] == "deconv" else 1):
                raise CheckpointError(f"{where}: layer {op[1]} has {b.numel()} biases for {w.size(out_dim)} outputs")
            # Largest |sum| for one output: every input at the clamp, every weight of that output, plus the bias.
            per_output = w.abs().to(torch.int64).sum(dim=(0, 2, 3) if op[0] == "deconv" else (1, 2, 3))
            bound = ACT_LIMIT * float(per_output.max()) + float(b.abs().max())
            if bound >= EXACT_LIMIT:
                raise CheckpointError(f"{where}: layer {op[1]}'s sums could exceed 2**53: not exactly computable")

    # -- evaluation ---------------------------------------------------------------
    def forward(self, x: Tensor, skip: int = 0) -> Tensor:
        """Integer grid values in (float64), integer grid values out; the same bits on every device (no gradient).

        ``skip``: the first layer's first ``skip`` input channels are zeros,
        left out of ``x``; their products (exact zeros) are not computed.
        """
        x = x.detach().double()
        if self.ops and self.ops[0][0] not in ("conv", "deconv"):
            x = x.clone()  # activations work in place: never on the caller's tensor
        if skip and (not self.ops or self.ops[0][0] not in ("conv", "deconv") or self.ops[0][5] != 1):
            x = torch.cat([x.new_zeros(x.size(0), skip, *x.shape[2:]), x], dim=1)  # nothing to skip in: zeros
            skip = 0
        with exact_kernels(x.device), torch.no_grad():
            for n, op in enumerate(self.ops):
                x = self._run(op, x, skip=skip if n == 0 else 0)
        return x

    def forward_parity(self, x: Tensor, parity: int) -> Tensor:
        """``forward(x)`` only where ``(row + col) % 2 == parity``, as a checkerboard half (B, C, H, W // 2).

        A network of one stride-1 convolution computes just those outputs
        (half the work); any other computes all and keeps those.
        """
        x = x.detach().double()
        if len(self.ops) == 1 and self.ops[0][0] == "conv" and self.ops[0][2:6] == ((1, 1), self.ops[0][3], (1, 1), 1):
            with exact_kernels(x.device), torch.no_grad():
                return self._run(self.ops[0], x, parity)
        out = self.forward(x)
        h, w = out.shape[-2:]
        rows = torch.arange(h, device=out.device)[:, None]
        cols = (parity + rows) % 2 + 2 * torch.arange(w // 2, device=out.device)[None, :]
        return out[:, :, rows, cols]

    def _run(self, op: tuple, x: Tensor, parity: int | None = None, skip: int = 0) -> Tensor:
        kind = op[0]
        if kind == "relu":
            return x.clamp_(min=0)
        if kind == "leaky":
            # floor(x * slope + 1/2) on the negatives: slope = k / 2**16 is dyadic, so x * slope is exact.
            negative = x.clamp(max=0).mul_(op[2] / (1 << SLOPE_BITS)).add_(0.5).floor_()
            return x.clamp_(min=0).add_(negative)
        if kind == "identity":
            return x
        _, i, stride, padding, dilation, groups, extra = op
        w, start = self._weights(i, x.device)
        if skip:
            w = w[skip:] if kind == "deconv" else w[:, skip:]
        plain = groups == 1 and dilation == (1, 1)
        if kind == "conv" and plain and stride == (1, 1) and parity is not None:
            acc = taps_conv2d_parity(x, w, start, padding, parity)
        elif kind == "conv" and plain and stride == (1, 1):
            acc = taps_conv2d(x, w, start, padding)
        elif kind == "deconv" and plain:
            acc = taps_conv_transpose2d(x, w, start, stride, padding, extra)
        elif kind == "deconv":
            acc = F.conv_transpose2d(x, w, None, stride, padding, extra, groups, dilation) + start[:, None, None]
        else:
            acc = F.conv2d(x, w, None, stride, padding, dilation, groups) + start[:, None, None]
        return acc.mul_(1.0 / (1 << WEIGHT_BITS)).floor_().clamp_(-ACT_LIMIT, ACT_LIMIT)

    def _weights(self, i: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Layer ``i``'s float64 weights and start values, converted once (again when the buffers change)."""
        w, b = getattr(self, f"w{i}"), getattr(self, f"b{i}")
        c = self._converted.get(i)
        if c is None or c[0] is not w or c[1] != w._version or c[2] is not b or c[3] != b._version or c[4] != device:
            w64 = w.to(device=device, dtype=torch.float64)
            # The rounding's half step rides in with the bias: acc + b + 2**(W-1), then one exact scaling and floor.
            start = b.to(device=device, dtype=torch.float64) + float(1 << (WEIGHT_BITS - 1))
            c = (w, w._version, b, b._version, device, w64, start)
            self._converted[i] = c
        return c[5], c[6]

    # -- checkpoints ----------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # Checkpoints written before integer networks existed lack these buffers: they are converted on
        # update() instead, the same way on every machine. Stored ones are taken as they are (and checked).
        for name, current in list(self._buffers.items()):
            value = state_dict.get(prefix + name)
            if value is None or current is None:
                continue
            if not isinstance(value, torch.Tensor) or value.dtype != current.dtype:
                errors.append(f"{prefix}{name}: expected a {current.dtype} tensor")
                continue
            self._buffers[name] = value.detach().clone()

    def extra_repr(self) -> str:
        return f"layers={len(self.ops)}, act_bits={ACT_BITS}, weight_bits={WEIGHT_BITS}, ready={self.ready}"


_KEY = re.compile(r"(^|\.)exact_\w+\.[wb]\d+$")


def is_integer_network_key(key: str) -> bool:
    """Whether a state-dict key is an integer network's (the built-ins name them ``exact_*``)."""
    return bool(_KEY.search(key))


def integer_networks(module: nn.Module) -> list[tuple[str, IntegerNetwork]]:
    """Every :class:`IntegerNetwork` inside ``module``, with its name."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, IntegerNetwork)]


__all__ = [
    "ACT_BITS",
    "WEIGHT_BITS",
    "IntegerNetwork",
    "from_grid",
    "integer_networks",
    "is_integer_network_key",
    "to_grid",
]
