"""Built-in losses: ``loss(x, out) -> scalar``.

``x`` is the original batch (B, 3, H, W) in [0, 1]; ``out`` is the model's
forward output ``{"x_hat": ..., "likelihoods": {...}}``. A recipe's ``weight``
(lambda, beta, ...) multiplies the value outside the loss.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.plugin.checks import check_choice, check_int
from rdkit_ae.plugins import vgg
from rdkit_ae.registry import register


class ImageSizeError(RdkitError, ValueError):
    """Images too small for a loss (SSIM window, MS-SSIM scales)."""


@register("loss", "mse")
class MSELoss(nn.Module):
    """Mean squared error between the reconstruction and the original (pixels in [0, 1])."""

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        return F.mse_loss(out["x_hat"], x)


def _iter_tensors(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _iter_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _iter_tensors(v)


@register("loss", "rate")
class RateLoss(nn.Module):
    """Estimated rate in bits per pixel: sum of -log2(likelihood) over all latents, / (B * H * W).

    Every tensor in ``out["likelihoods"]`` counts (nested dicts and lists
    included); H and W are the original image's. Its recipe weight is the
    rate-distortion trade-off lambda.
    """

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        B, _, H, W = x.shape
        likelihoods = out.get("likelihoods") if isinstance(out, Mapping) else None
        tensors = list(_iter_tensors(likelihoods))
        if not tensors:
            raise RdkitError("loss 'rate': the model output has no likelihoods; use a quantizer that provides them")
        total = cast(Tensor, sum(torch.log(t).sum() for t in tensors))  # non-empty: a Tensor, never 0
        return total / (-math.log(2) * B * H * W)


@register("loss", "rd")
class RDLoss(nn.Module):
    """Rate-distortion Lagrangian per image: mean of lambda_i * 255^2 * MSE_i + bpp_i (variable-rate training).

    ``lambda_i`` is the model output's per-image ``"lmbda"`` (quantizer
    ``gain`` draws one rate per image), else the fixed ``lmbda`` parameter.
    ``MSE_i`` is on [0, 1] pixels (so ``255^2 * MSE`` is on the 8-bit scale
    of CompressAI's lambdas); ``bpp_i`` is the image's estimated rate, as in
    ``rate``. Give it weight 1.

    Args:
        lmbda: fixed trade-off for models without per-image lambdas (default
            none: the model must be variable-rate).
    """

    def __init__(self, lmbda: float | None = None):
        super().__init__()
        if lmbda is not None and (isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not lmbda > 0):
            raise PluginError(f"loss 'rd': lmbda must be a positive number; got {lmbda!r}")
        self.lmbda = None if lmbda is None else float(lmbda)

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        B, _, H, W = x.shape
        lmbda = out.get("lmbda")
        if lmbda is None:
            if self.lmbda is None:
                raise RdkitError(
                    "loss 'rd': the model gives no per-image lambda; use quantizer 'gain' or set the loss's lmbda"
                )
            lmbda = x.new_full((B,), self.lmbda)
        tensors = list(_iter_tensors(out.get("likelihoods")))
        if not tensors:
            raise RdkitError("loss 'rd': the model output has no likelihoods; use a quantizer that provides them")
        bits = cast(Tensor, sum(torch.log(t).reshape(B, -1).sum(1) for t in tensors))
        bpp = bits / (-math.log(2) * H * W)
        mse = (out["x_hat"] - x).pow(2).reshape(B, -1).mean(1)
        return (lmbda * 255**2 * mse + bpp).mean()


def _check_win_size(plugin: str, win_size: Any) -> int:
    win_size = check_int(plugin, "win_size", win_size, 3)
    if win_size % 2 == 0:
        raise PluginError(f"{plugin}: win_size must be odd; got {win_size}")
    return win_size


@register("loss", "ssim")
class SSIMLoss(nn.Module):
    """1 - SSIM (Gaussian window, data range 1); reconstructions are clamped to [0, 1] first.

    Args:
        win_size: odd Gaussian window size (default 11); images must be at
            least this large on each side.
    """

    def __init__(self, win_size: int = 11):
        super().__init__()
        self.win_size = _check_win_size("loss 'ssim'", win_size)

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        from pytorch_msssim import ssim

        H, W = x.shape[-2:]
        if min(H, W) < self.win_size:
            raise ImageSizeError(
                f"loss 'ssim': images of {H}x{W} are smaller than the SSIM window ({self.win_size}); "
                "use a smaller win_size (odd, >= 3)"
            )
        x_hat = out["x_hat"].clamp(0.0, 1.0)
        return 1.0 - ssim(x_hat, x, data_range=1.0, size_average=True, win_size=self.win_size)


@register("loss", "ms-ssim")
class MSSSIMLoss(nn.Module):
    """1 - MS-SSIM (5 scales, data range 1); needs images larger than (win_size - 1) * 16 a side.

    With the default ``win_size=11`` images must be at least 161x161: use
    ``ssim`` for small images such as CIFAR-10 (32x32). Reconstructions are
    clamped to [0, 1] first.

    Args:
        win_size: odd Gaussian window size (default 11).
    """

    def __init__(self, win_size: int = 11):
        super().__init__()
        self.win_size = _check_win_size("loss 'ms-ssim'", win_size)

    @property
    def min_size(self) -> int:
        return (self.win_size - 1) * 2**4 + 1

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        from pytorch_msssim import ms_ssim

        H, W = x.shape[-2:]
        if min(H, W) < self.min_size:
            raise ImageSizeError(
                f"loss 'ms-ssim': needs images of at least {self.min_size}x{self.min_size} pixels "
                f"(5 scales, win_size {self.win_size}), got {H}x{W}; use the 'ssim' loss for small "
                "images such as CIFAR-10 (32x32)"
            )
        x_hat = out["x_hat"].clamp(0.0, 1.0)
        return 1.0 - ms_ssim(x_hat, x, data_range=1.0, size_average=True, win_size=self.win_size)


NORMALIZE = ("target", "none")


@register("loss", "vgg-perceptual")
class VGGPerceptualLoss(nn.Module):
    """Perceptual loss: weighted MSE between frozen VGG-16 features of x_hat and x, normalised per layer.

    ``sum_l w_l * mean((phi_l(x_hat) - phi_l(x))**2) / n_l`` over the chosen
    ReLU layers ``l`` of a frozen, ImageNet-trained VGG-16 (``features``,
    truncated after the deepest requested layer; always in eval mode; no
    gradient to its weights). Features of the original are computed without
    gradient.

    Normalisation ``normalize="target"`` (default): ``n_l`` is the mean
    squared activation of the original's features at layer ``l`` over the
    batch (detached). Each term is then a relative feature error: about 0
    for identical images and O(1) for unrelated ones, on the scale of other
    [0, 1]-pixel losses, so recipe weights like 0.1 are meaningful, and
    independent of the preprocessing convention (raw feature MSEs are
    1e4-1e6 times a pixel MSE). ``normalize="none"``: ``n_l = 1`` (raw).

    Reconstructions are not clamped. Weights: ``weights`` (a file path, or
    ``"torchvision"``), else ``$RDKIT_VGG_WEIGHTS``, else torchvision's
    IMAGENET1K_V1 (downloaded where there is internet). Preprocessing:
    ``preprocessing`` (``"torchvision"`` or ``"caffe"``), else
    ``$RDKIT_VGG_PREPROCESSING``, else ``"torchvision"``; it must match the
    weights (torchvision's: ``torchvision``; the original Caffe release:
    ``caffe``). The network follows the device of ``x``.

    Speed (a CPU step of conv-hybrid is mostly this loss; see
    docs/training.md): ``precision="bf16"`` runs the two VGG forward passes
    (and so their backward) under bf16 autocast, the loss itself summed in
    fp32; ``"auto"`` is bf16 where the hardware has native bf16 (AVX512-BF16
    or AMX CPUs, CUDA GPUs that support it), else fp32; ``"fp32"`` (default)
    is the reference. ``every=k`` computes the term only on every k-th call
    in training mode (the first, the (k+1)-th, ...) and multiplies it by k
    there, returning 0 in between, so its expected weight is unchanged; in
    eval mode (validation) it is always computed, at weight 1.
    ``batch_fraction=f`` computes it, in training mode, on the first
    ``ceil(f * B)`` images of each (shuffled) batch only: every step still
    gets a perceptual gradient, which suits Adam better than ``every``.

    Args:
        layers: ReLU layers, among relu1_1, relu1_2, relu2_1, relu2_2,
            relu3_1, relu3_2, relu3_3, relu4_1, relu4_2, relu4_3, relu5_1,
            relu5_2, relu5_3 (default relu1_2, relu2_2, relu3_3).
        layer_weights: one weight per layer (a list, or a dict by name);
            default 1.0 each.
        weights: VGG-16 weights file, or "torchvision".
        preprocessing: "torchvision" or "caffe".
        normalize: "target" (default) or "none".
        precision: "fp32" (default), "bf16" or "auto".
        every: compute the term on every k-th training call (default 1).
        batch_fraction: share of each training batch it is computed on (default 1.0).
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        weights: str | None = None,
        preprocessing: str | None = None,
        normalize: str = "target",
        precision: str = "fp32",
        every: int = 1,
        batch_fraction: float = 1.0,
    ):
        super().__init__()
        name = "loss 'vgg-perceptual'"
        if isinstance(layers, str):
            layers = (layers,)
        if not isinstance(layers, Sequence) or len(layers) == 0:
            raise PluginError(f"{name}: layers must be a non-empty list of layer names; got {layers!r}")
        layers = tuple(layers)
        indices = [vgg.layer_index(n) for n in layers]
        if len(set(layers)) != len(layers):
            raise PluginError(f"{name}: layers lists a layer twice: {list(layers)}")
        self.layers = layers
        self.layer_weights = self._check_layer_weights(name, layers, layer_weights)
        self.normalize = check_choice(name, "normalize", normalize, NORMALIZE)
        self.precision = check_choice(name, "precision", precision, vgg.PRECISIONS)
        self.every = check_int(name, "every", every, minimum=1)
        self._calls = 0  # training-mode calls so far, for `every`
        self.batch_fraction = self._check_fraction(name, batch_fraction)
        self.preprocessing = vgg.resolve_preprocessing(preprocessing)
        path, self.weights_source = vgg.resolve_weights(weights)
        self.weights_path = path
        self._weights_arg = path if path is not None else vgg.TORCHVISION
        self._index_of = dict(zip(layers, indices))
        self.depth = max(indices)
        self._deepest = layers[indices.index(self.depth)]
        # Not registered as a submodule: the shared, frozen network stays out of
        # state_dict(), parameters() and .to()/.train(); it follows x's device.
        self._nets: dict[str, nn.Sequential] = {}
        self._net(torch.device("cpu"))  # load now, so weight problems surface at build time

    @staticmethod
    def _check_fraction(name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise PluginError(f"{name}: batch_fraction must be a number in (0, 1]; got {value!r}")
        return float(value)

    @staticmethod
    def _check_layer_weights(name, layers, layer_weights) -> tuple[float, ...]:
        values = vgg.layer_weight_values(name, layers, layer_weights)
        try:
            return tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise PluginError(f"{name}: layer_weights must be numbers; got {values!r}") from None

    def _net(self, device: torch.device) -> nn.Sequential:
        key = str(device)
        net = self._nets.get(key)
        if net is None:
            net = vgg.load_features(self.depth, self._weights_arg, device, layer=self._deepest)
            self._nets[key] = net
        return net

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(mode)
        for net in self._nets.values():
            net.eval()  # the feature network is frozen, always in eval mode
        return self

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        x_hat = out["x_hat"].to(x.device)
        scale = 1.0
        if self.training and self.every > 1:
            active = self._calls % self.every == 0
            self._calls += 1
            if not active:
                return x_hat.sum() * 0.0  # zero, still in the graph (a recipe may have no other term)
            scale = float(self.every)
        if self.training and self.batch_fraction < 1.0:
            n = max(1, math.ceil(self.batch_fraction * x.shape[0]))
            x, x_hat = x[:n], x_hat[:n]  # training batches are shuffled: the first n are a random subset
        net = self._net(x.device)
        indices = [self._index_of[n] for n in self.layers]
        with vgg.autocast(vgg.resolve_precision(self.precision, x.device), x.device):
            with torch.no_grad():  # the original's features need no autograd
                targets = vgg.features(net, x, indices, self.preprocessing)
            preds = vgg.features(net, x_hat, indices, self.preprocessing)
        total = x_hat.new_zeros((), dtype=torch.float32)
        for w, p, t in zip(self.layer_weights, preds, targets):
            p, t = p.float(), t.float()  # the loss is summed in fp32 whatever the features' precision
            term = F.mse_loss(p, t)
            if self.normalize == "target":
                term = term / t.pow(2).mean().clamp_min(1e-12)
            total = total + w * term
        return total * scale if scale != 1.0 else total

    def extra_repr(self) -> str:
        src = self.weights_path or "torchvision IMAGENET1K_V1"
        return (
            f"layers={list(self.layers)}, layer_weights={list(self.layer_weights)}, "
            f"weights={src!r}, preprocessing={self.preprocessing!r}, normalize={self.normalize!r}, "
            f"precision={self.precision!r}, every={self.every}, batch_fraction={self.batch_fraction}"
        )


__all__ = ["MSELoss", "RateLoss", "RDLoss", "SSIMLoss", "MSSSIMLoss", "VGGPerceptualLoss", "ImageSizeError"]
