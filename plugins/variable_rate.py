"""Variable rate with gain units (Cui et al., CVPR 2021): one model, a whole rate-distortion curve.

The quantizer ``gain`` wraps any other quantizer (``inner``): the latent is
scaled channel-wise by a learned gain vector before the inner codec and by a
learned inverse gain after it. There is one pair of vectors per trained
lambda; a continuous rate position ``t`` in ``[0, K-1]`` interpolates them
(and lambda) log-linearly, so the model also codes between the trained
points.

In training every image draws its own ``t`` uniformly and the forward output
carries its lambda (``"lmbda"``, one per image) for the ``rd`` loss. In eval
mode, and in ``compress`` / ``decompress``, the current operating point set
by :meth:`GainQuantizer.set_rate` is used; it starts at the middle of the
range, ``t = (K-1)/2`` (a typical rate, where validation during training is
measured).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from compressai.latent_codecs import LatentCodec
from torch import Tensor

from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.plugin.tables import update_entropy_models
from rdkit_ae.registry import accepted_params, create, get_plugin, register

PLUGIN = "gain"
MAX_RATES = 64
# Initial gains: the uniform quantiser step of high-rate theory, D ~ 3.3e-5 / lambda at
# lambda * 255^2 * D + R, gives log gain 0.5 * ln(lambda / 4e-4) for every channel.
GAIN_REFERENCE = 4e-4


class RateError(RdkitError, ValueError):
    """An operating point outside what a variable-rate model was trained for."""


def check_lambdas(name: str, lambdas: object) -> tuple[float, ...]:
    """2..MAX_RATES finite positive numbers in increasing order."""

    def shown(value: object) -> str:
        # A recipe's list may hold thousands of values: the one error line echoes a summary, not the list.
        text = repr(value)
        if len(text) <= 80:
            return text
        if isinstance(value, (list, tuple)) and len(value) > 3:
            return f"{len(value)} values [{shown(value[0])}, {shown(value[1])}, ..., {shown(value[-1])}]"
        return text[:60] + "..."

    if isinstance(lambdas, (str, bytes)) or not isinstance(lambdas, Sequence) or not 2 <= len(lambdas) <= MAX_RATES:
        raise PluginError(f"{name}: lambdas must be a list of 2..{MAX_RATES} numbers; got {shown(lambdas)}")
    values = []
    for v in lambdas:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise PluginError(f"{name}: lambdas must be positive finite numbers; got {shown(v)}")
        values.append(float(v))
    if any(b <= a for a, b in zip(values, values[1:])):
        raise PluginError(f"{name}: lambdas must increase strictly; got {shown(values)}")
    return tuple(values)


def _inner_codec(name: str, channels: int, inner: object) -> nn.Module:
    if not isinstance(inner, Mapping) or not isinstance(inner.get("name"), str):
        raise PluginError(f"{name}: inner must be a table with a string 'name', e.g. {{ name = \"hyperprior\" }}")
    if inner["name"] == PLUGIN:
        raise PluginError(f"{name}: inner cannot be another '{PLUGIN}' quantizer")
    params = {k: v for k, v in inner.items() if k != "name"}
    try:
        accepted = accepted_params(get_plugin("quantizer", inner["name"]).factory)
        if "channels" not in params and (accepted is None or "channels" in accepted):
            params["channels"] = channels
        return create("quantizer", inner["name"], **params)
    except PluginError as exc:
        raise PluginError(f"{name}: inner {exc}") from None


@register("quantizer", PLUGIN)
class GainQuantizer(LatentCodec):
    """Variable rate (Cui et al. 2021 gain units) around another quantizer: one model for a whole RD curve.

    ``y * gain(t) -> inner -> y_hat * inverse_gain(t)``, with K learned
    per-channel log-gain and log-inverse-gain vectors, one per entry of
    ``lambdas``, interpolated log-linearly for a rate position ``t`` in
    ``[0, K-1]`` (lambda too). Training draws ``t`` uniformly per image (from
    torch's global generator) and returns its lambda as ``"lmbda"``; use the
    ``rd`` loss. Eval, ``compress`` and ``decompress`` use the operating
    point of :meth:`set_rate` (initially the middle, ``t = (K-1)/2``).
    Streams, ``shape`` and ``bitstream_layout`` are the inner quantizer's.

    Args:
        channels: latent channels (passed on to the inner quantizer).
        lambdas: the trained rate-distortion trade-offs, increasing (2..64).
        inner: the inner quantizer as a table, e.g.
            ``{ name = "mean-scale-hyperprior", N = 64, mixed = true }``.
    """

    inner: Any  # any quantizer plugin

    def __init__(self, channels: int, lambdas: Sequence[float], inner: Mapping[str, Any]):
        name = f"quantizer '{PLUGIN}'"
        lambdas = check_lambdas(name, lambdas)
        codec = _inner_codec(name, channels, inner)
        super().__init__()
        self.inner = codec
        self.channels = int(getattr(codec, "channels", channels))
        self.inner_name = str(inner["name"])
        self.lambdas = lambdas
        log_gain = 0.5 * torch.log(torch.tensor(lambdas, dtype=torch.float32) / GAIN_REFERENCE)
        self.log_gain = nn.Parameter(log_gain[:, None].repeat(1, self.channels))
        self.log_inverse_gain = nn.Parameter(-log_gain[:, None].repeat(1, self.channels))
        self.register_buffer("_log_lambdas", torch.log(torch.tensor(lambdas, dtype=torch.float32)), persistent=False)
        self.rate = (len(lambdas) - 1) / 2

    # -- the operating point --
    @property
    def stride(self) -> int:
        return int(getattr(self.inner, "stride", 1))

    @property
    def bitstream_layout(self):
        """The inner quantizer's (an AttributeError when it has none: the codec then measures the layout)."""
        return self.inner.bitstream_layout

    @property
    def lmbda(self) -> float:
        """The lambda of the current operating point (log-linear between the trained ones)."""
        i = min(int(self.rate), len(self.lambdas) - 2)
        f = self.rate - i
        return math.exp((1 - f) * math.log(self.lambdas[i]) + f * math.log(self.lambdas[i + 1]))

    def set_rate(self, lmbda: float | None = None, index: float | None = None) -> float:
        """Pick the operating point by ``lmbda`` (within the trained range) or by rate ``index`` in [0, K-1].

        A fractional index, or a lambda between two trained ones, interpolates.
        Returns the rate position ``t``.
        """
        if (lmbda is None) == (index is None):
            raise RateError("give either a lambda or a rate index, not both or neither")
        K = len(self.lambdas)
        if index is not None:
            t = _number("rate index", index)
            if not 0 <= t <= K - 1:
                raise RateError(f"rate index {index!r} is outside 0..{K - 1} (this model has {K} trained rates)")
        else:
            t = self.rate_of(_number("lambda", lmbda))
        self.rate = float(t)
        return self.rate

    def rate_of(self, lmbda: float) -> float:
        """The rate position of a lambda within the trained range (the inverse of the interpolation)."""
        lo, hi = self.lambdas[0], self.lambdas[-1]
        if not lo <= lmbda <= hi:
            raise RateError(f"lambda {lmbda:g} is outside the trained range {lo:g}..{hi:g} ({list(self.lambdas)})")
        for i in range(len(self.lambdas) - 1):
            a, b = self.lambdas[i], self.lambdas[i + 1]
            if lmbda <= b:
                return i + math.log(lmbda / a) / math.log(b / a)
        return float(len(self.lambdas) - 1)  # not reached: lmbda <= hi

    def gains(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For rate positions ``t`` (B,): gain and inverse gain (B, C, 1, 1) and lambda (B,)."""
        K = len(self.lambdas)
        t = t.clamp(0, K - 1)
        i = t.floor().long().clamp(max=K - 2)
        f = (t - i)[:, None]
        log_g = (1 - f) * self.log_gain[i] + f * self.log_gain[i + 1]
        log_ig = (1 - f) * self.log_inverse_gain[i] + f * self.log_inverse_gain[i + 1]
        log_l = (1 - f[:, 0]) * self._log_lambdas[i] + f[:, 0] * self._log_lambdas[i + 1]
        return log_g.exp()[:, :, None, None], log_ig.exp()[:, :, None, None], log_l.exp()

    def _current(self) -> tuple[Tensor, Tensor, Tensor]:
        # One (1, C, 1, 1) gain for the whole batch: the same arithmetic in forward and compress.
        return self.gains(torch.full((1,), self.rate, device=self.log_gain.device))

    # -- coding --
    def forward(self, y: Tensor) -> dict[str, Any]:
        B = y.size(0)
        if self.training:
            t = torch.rand(B, device=y.device) * (len(self.lambdas) - 1)
            gain, inverse, lmbda = self.gains(t)
        else:
            gain, inverse, lmbda = self._current()
            lmbda = lmbda.expand(B)
        out = self.inner(y * gain)
        return {"y_hat": out["y_hat"] * inverse, "likelihoods": out["likelihoods"], "lmbda": lmbda}

    def compress(self, y: Tensor) -> dict[str, Any]:
        gain, inverse, _ = self._current()
        out = dict(self.inner.compress(y * gain))
        if "y_hat" in out:
            out["y_hat"] = out["y_hat"] * inverse
        return out

    def decompress(self, strings, shape, **kwargs) -> dict[str, Any]:
        _, inverse, _ = self._current()
        return {"y_hat": self.inner.decompress(strings, shape)["y_hat"] * inverse}

    def update(self, scale_table=None, force: bool = False) -> bool:
        """Build the inner quantizer's CDF tables."""
        return update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        return self.inner.aux_loss()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lambdas={list(self.lambdas)}, rate={self.rate:g}"


def _number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RateError(f"{what} must be a finite number; got {value!r}")
    return float(value)


__all__ = ["GainQuantizer", "RateError", "check_lambdas"]
