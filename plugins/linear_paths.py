"""Linear block transforms: the orthogonal 1x1 paths of the ``block`` transforms and the ``shortcut`` option.

An image is cut into ``factor x factor`` blocks (``PixelUnshuffle``: ``3 *
factor**2`` values per block, channel-major: ``c * f * f + i * f + j``); the
analysis path projects every block onto ``latent_channels`` orthonormal
components (times ``gain``) with a 1x1 convolution, the synthesis path
applies the transpose. With all components kept this is invertible, so a
model starts as a transform coder whose quality only the quantizer limits
(AuxT, Li et al., ICLR 2025: wavelet downsampling and an orthogonal
projection beside the nonlinear transform).

Initialisation (``init``): ``"haar"`` (a separable Haar wavelet basis after an
orthonormal luma/chroma rotation, coarse scales and luma first, centred on
0.5), ``"pca"`` (the principal components of the training data's blocks,
set by :meth:`init_from_data` at the start of a fresh run; Haar until then)
or ``"random"`` (PyTorch's default initialisation, as any learned layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INITS = ("pca", "haar", "random")
# Orthonormal colour rotation: luma-like first, then two chroma differences.
_COLOUR = ((1.0, 1.0, 1.0), (1.0, -1.0, 0.0), (1.0, 1.0, -2.0))


def haar_matrix(n: int) -> Tensor:
    """The orthonormal n x n Haar matrix (n a power of two), rows from coarse to fine, in float64."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        m = h.shape[0]
        top = torch.kron(h, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
        bottom = torch.kron(torch.eye(m, dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64))
        h = torch.cat([top, bottom]) / math.sqrt(2.0)
    return h


def _level(i: int) -> int:
    """Octave of row i of a Haar matrix: 0 for the mean, then 1, 2, 2, 3, 3, 3, 3, ..."""
    return 0 if i == 0 else i.bit_length()


def haar_basis(factor: int) -> Tensor:
    """Orthonormal rows (3 f^2, 3 f^2): colour rotation x 2-D Haar, ordered by octave, then colour, then frequency."""
    h = haar_matrix(factor)
    colour = torch.tensor(_COLOUR, dtype=torch.float64)
    colour = colour / colour.norm(dim=1, keepdim=True)
    rows, keys = [], []
    for k in range(3):
        for a in range(factor):
            for b in range(factor):
                rows.append(torch.kron(colour[k], torch.outer(h[a], h[b]).flatten()))
                keys.append((max(_level(a), _level(b)), k, a + b, a, b))
    order = sorted(range(len(rows)), key=lambda r: keys[r])
    return torch.stack([rows[r] for r in order])


def block_pca(x: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """(mean (d,), components (d, d)) of the ``factor`` blocks of images ``x`` (B, 3, H, W), in float64.

    Components are rows, orthonormal, by decreasing variance; each one's sign
    is fixed (largest entry positive) so the result does not depend on the
    eigensolver's choice.
    """
    x = x.detach().to("cpu", torch.float64)
    h, w = x.shape[-2] // factor * factor, x.shape[-1] // factor * factor
    b = F.pixel_unshuffle(x[..., :h, :w], factor).permute(0, 2, 3, 1).reshape(-1, 3 * factor * factor)
    mean = b.mean(0)
    centred = b - mean
    cov = centred.T @ centred / max(1, b.shape[0])
    values, vectors = torch.linalg.eigh(cov)
    comps = vectors[:, values.argsort(descending=True)].T
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    return mean, comps * torch.where(sign == 0, torch.ones_like(sign), sign)


def _basis(init: str, factor: int, rows: int, x: Tensor | None) -> tuple[Tensor, Tensor]:
    """(top ``rows`` components (rows, d), zero-padded beyond d; mean (d,)) for ``init``."""
    d = 3 * factor * factor
    if x is not None:
        mean, comps = block_pca(x, factor)
    else:
        mean, comps = torch.full((d,), 0.5, dtype=torch.float64), haar_basis(factor)
    w = torch.zeros(rows, d, dtype=torch.float64)
    w[: min(rows, d)] = comps[: min(rows, d)]
    return w, mean


def _bias(conv: nn.Conv2d) -> Tensor:
    assert conv.bias is not None  # made with bias=True
    return conv.bias


class LinearAnalysis(nn.Module):
    """Blocks (B, 3 f^2, h, w) -> latent (B, latent_channels, h, w): ``gain * W (b - mean)`` as one 1x1 conv."""

    def __init__(self, factor: int, latent_channels: int, init: str = "pca", gain: float = 1.0):
        super().__init__()
        self.factor, self.init, self.gain = factor, init, float(gain)
        self.proj = nn.Conv2d(3 * factor * factor, latent_channels, kernel_size=1)
        if init != "random":
            self._set(*_basis(init, factor, latent_channels, None))

    @torch.no_grad()
    def _set(self, w: Tensor, mean: Tensor) -> None:
        w = w * self.gain
        self.proj.weight.copy_(w[:, :, None, None].to(self.proj.weight.dtype))
        _bias(self.proj).copy_(-(w @ mean))

    def init_from_data(self, x: Tensor) -> None:
        """With ``init="pca"``: project onto the principal components of the blocks of ``x`` (images in [0, 1])."""
        if self.init == "pca":
            self._set(*_basis("pca", self.factor, self.proj.out_channels, x))

    def forward(self, blocks: Tensor) -> Tensor:
        return self.proj(blocks)


class LinearSynthesis(nn.Module):
    """Latent (B, latent_channels, h, w) -> blocks (B, 3 f^2, h, w): ``W^T y / gain + mean``, the analysis' inverse."""

    def __init__(self, factor: int, latent_channels: int, init: str = "pca", gain: float = 1.0):
        super().__init__()
        self.factor, self.init, self.gain = factor, init, float(gain)
        self.proj = nn.Conv2d(latent_channels, 3 * factor * factor, kernel_size=1)
        if init != "random":
            self._set(*_basis(init, factor, latent_channels, None))

    @torch.no_grad()
    def _set(self, w: Tensor, mean: Tensor) -> None:
        self.proj.weight.copy_((w.T / self.gain)[:, :, None, None].to(self.proj.weight.dtype))
        _bias(self.proj).copy_(mean)

    def init_from_data(self, x: Tensor) -> None:
        """With ``init="pca"``: the transpose of the analysis' components (the same data gives the same PCA)."""
        if self.init == "pca":
            self._set(*_basis("pca", self.factor, self.proj.in_channels, x))

    def forward(self, y: Tensor) -> Tensor:
        return self.proj(y)


def unshuffle(x: Tensor, factor: int) -> Tensor:
    return F.pixel_unshuffle(x, factor) if factor > 1 else x


def shuffle(blocks: Tensor, factor: int) -> Tensor:
    return F.pixel_shuffle(blocks, factor) if factor > 1 else blocks


__all__ = ["INITS", "LinearAnalysis", "LinearSynthesis", "block_pca", "haar_basis", "haar_matrix"]
