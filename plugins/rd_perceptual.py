"""``rd-perceptual``: the variable-rate ``rd`` loss with a VGG-16 perceptual term inside each image's distortion.

Per image ``i``: ``lambda_i * 255^2 * (MSE_i + w * P_i) + bpp_i``, averaged
over the batch. ``P_i`` is the image's share of the ``vgg-perceptual`` loss:
``sum_l w_l * mean((phi_l(x_hat_i) - phi_l(x_i))**2) / n_l`` with ``n_l``
the batch's mean squared target activation at layer ``l`` (so the batch mean
of ``P_i`` is exactly what ``vgg-perceptual`` returns on the same batch).

Why inside the lambda: with ``rd`` + a separately weighted ``vgg-perceptual``
the perceptual term's weight against the rate would be fixed while the MSE's
varies with ``lambda_i`` (64x across fast-vr's lambdas): it would dominate at
low rates and vanish at high ones. Here ``w`` is the perceptual share of the
distortion at every operating point.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, cast

import torch
import torch.nn as nn
from torch import Tensor

from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.plugin import register_loss
from rdkit_ae.plugin.checks import check_choice, check_int
from rdkit_ae.plugins import vgg

PLUGIN = "rd-perceptual"
NAME = f"loss '{PLUGIN}'"
NORMALIZE = ("target", "none")


def _number(param: str, value: object, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):  # type: ignore[operator]
        kind = "a positive" if positive else "a non-negative"
        raise PluginError(f"{NAME}: {param} must be {kind} number; got {value!r}")
    return float(cast(float, value))


def _layer_weights(layers: tuple[str, ...], layer_weights: Any) -> tuple[float, ...]:
    values = vgg.layer_weight_values(NAME, layers, layer_weights)
    return tuple(_number("layer_weights", v, positive=False) for v in values)


@register_loss(PLUGIN)
class RDPerceptualLoss(nn.Module):
    """Mean of lambda_i * 255^2 * (MSE_i + w * VGG_i) + bpp_i: ``rd`` with a per-image VGG-16 perceptual term.

    ``lambda_i`` is the model output's per-image ``"lmbda"`` (quantizer
    ``gain``), else the fixed ``lmbda``. ``VGG_i`` is image ``i``'s
    ``vgg-perceptual`` value (the frozen network, its weights and
    preprocessing as for that loss: ``weights``/``$RDKIT_VGG_WEIGHTS``,
    ``preprocessing``/``$RDKIT_VGG_PREPROCESSING``); its batch mean equals
    ``vgg-perceptual`` on the batch. Give the entry weight 1.

    Args:
        perceptual_weight: ``w``, the perceptual term's weight inside the
            distortion (default 0.1; 0 is the ``rd`` loss, without running VGG).
        layers, layer_weights, weights, preprocessing, normalize: as for
            ``vgg-perceptual``.
        precision: the VGG forward (and backward) in ``"fp32"`` (default),
            ``"bf16"`` (autocast; the differences are taken in fp32) or
            ``"auto"`` (bf16 where the device runs it natively).
        every: compute the perceptual term on one training call in ``every``
            (the first, the (k+1)-th, ...) at ``every`` times its weight, so
            its expected weight is unchanged (the calls between are the
            plain ``rd`` loss), as ``vgg-perceptual``'s ``every``; validation
            always has it, at its weight.
        lmbda: fixed trade-off for models without per-image lambdas.
    """

    def __init__(
        self,
        perceptual_weight: float = 0.1,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        weights: str | None = None,
        preprocessing: str | None = None,
        normalize: str = "target",
        precision: str = "fp32",
        every: int = 1,
        lmbda: float | None = None,
    ):
        super().__init__()
        self.perceptual_weight = _number("perceptual_weight", perceptual_weight, positive=False)
        self.lmbda = None if lmbda is None else _number("lmbda", lmbda, positive=True)
        if isinstance(layers, str):
            layers = (layers,)
        if not isinstance(layers, Sequence) or len(layers) == 0:
            raise PluginError(f"{NAME}: layers must be a non-empty list of layer names; got {layers!r}")
        self.layers = tuple(layers)
        if len(set(self.layers)) != len(self.layers):
            raise PluginError(f"{NAME}: layers lists a layer twice: {list(self.layers)}")
        self._index = {n: vgg.layer_index(n) for n in self.layers}
        self.layer_weights = _layer_weights(self.layers, layer_weights)
        self.normalize = check_choice(NAME, "normalize", normalize, NORMALIZE)
        self.precision = check_choice(NAME, "precision", precision, vgg.PRECISIONS)
        self.every = check_int(NAME, "every", every, 1)
        self.preprocessing = vgg.resolve_preprocessing(preprocessing)
        path, _ = vgg.resolve_weights(weights)
        self._weights_arg = path if path is not None else vgg.TORCHVISION
        self.depth = max(self._index.values())
        self._deepest = max(self.layers, key=self._index.__getitem__)
        self._calls = 0
        if self.perceptual_weight > 0:
            self._net(torch.device("cpu"))  # load now: weight problems surface when the recipe is built

    # The frozen network is cached by vgg.load_features and never registered as a
    # submodule: it stays out of state_dict(), parameters() and .to().
    def _net(self, device: torch.device) -> nn.Sequential:
        return vgg.load_features(self.depth, self._weights_arg, device, layer=self._deepest)

    def perceptual(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per-image VGG term (B,): its mean is the ``vgg-perceptual`` loss of the batch."""
        net = self._net(x.device)
        indices = [self._index[n] for n in self.layers]
        # vgg-perceptual's precision rule ("auto": bf16 where the device has it natively) and feature pass
        with vgg.autocast(vgg.resolve_precision(self.precision, x.device), x.device):
            with torch.no_grad():
                targets = vgg.features(net, x, indices, self.preprocessing)
            preds = vgg.features(net, x_hat, indices, self.preprocessing)
        total = x_hat.new_zeros(x.shape[0], dtype=torch.float32)
        for w, p, t in zip(self.layer_weights, preds, targets):
            p, t = p.float(), t.float()  # summed in fp32 whatever the features' precision
            term = (p - t).pow(2).flatten(1).mean(1)
            if self.normalize == "target":
                term = term / t.pow(2).mean().clamp_min(1e-12)
            total = total + w * term
        return total

    def _perceptual_scale(self) -> float:
        """This call's weight of the perceptual term: 0 between `every` steps, w * every on them."""
        if self.perceptual_weight == 0:
            return 0.0
        if not self.training or self.every == 1:
            return self.perceptual_weight
        due = self._calls % self.every == 0
        self._calls += 1
        return self.perceptual_weight * self.every if due else 0.0

    def forward(self, x: Tensor, out: Mapping[str, Any]) -> Tensor:
        B, _, H, W = x.shape
        lmbda = out.get("lmbda")
        if lmbda is None:
            if self.lmbda is None:
                raise RdkitError(
                    f"{NAME}: the model gives no per-image lambda; use quantizer 'gain' or set the loss's lmbda"
                )
            lmbda = x.new_full((B,), self.lmbda)
        tensors = [t for t in _likelihoods(out.get("likelihoods"))]
        if not tensors:
            raise RdkitError(f"{NAME}: the model output has no likelihoods; use a quantizer that provides them")
        bits = cast(Tensor, sum(torch.log(t).reshape(B, -1).sum(1) for t in tensors))
        bpp = bits / (-math.log(2) * H * W)
        x_hat = out["x_hat"]
        distortion = (x_hat - x).pow(2).reshape(B, -1).mean(1)
        scale = self._perceptual_scale()
        if scale:
            distortion = distortion + scale * self.perceptual(x, x_hat)
        return (lmbda * 255**2 * distortion + bpp).mean()

    def extra_repr(self) -> str:
        return (
            f"perceptual_weight={self.perceptual_weight}, layers={list(self.layers)}, "
            f"layer_weights={list(self.layer_weights)}, preprocessing={self.preprocessing!r}, "
            f"normalize={self.normalize!r}, precision={self.precision!r}, every={self.every}"
        )


def _likelihoods(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _likelihoods(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _likelihoods(v)


__all__ = ["RDPerceptualLoss"]
