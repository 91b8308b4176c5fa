"""Example rdkit-ae plugins: one of each kind, built only on the public plugin interface (``rdkit_ae.plugin``).

- encoder / decoder ``example-patches``: a ``factor x factor`` space-to-depth
  and a 1x1 convolution (and back): the smallest learned transform;
- quantizer ``example-tanh``: fixed rate, ``tanh`` bounds the latent, the
  base class does the bits, the bitstream and the device;
- loss ``example-l1``: mean absolute error;
- callback ``example-steps``: counts optimiser steps, survives a resume and
  writes the count when training ends (or fails).

``recipe.toml`` beside this file uses all four:
``rdkit train --recipe $(python -c "import rdkit_example_plugins as m; print(m.RECIPE)") --data ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from rdkit_ae.plugin import (
    Callback,
    FixedRateQuantizer,
    TrainContext,
    check_int,
    register_callback,
    register_decoder,
    register_encoder,
    register_loss,
    register_quantizer,
)

RECIPE = str(Path(__file__).with_name("recipe.toml"))


@register_encoder("example-patches")
class PatchEncoder(nn.Module):
    """Space-to-depth by ``factor``, then a 1x1 convolution to ``latent_channels``."""

    def __init__(self, latent_channels: int = 12, factor: int = 4):
        super().__init__()
        self.stride = check_int("encoder 'example-patches'", "factor", factor, 1, 16)
        self.out_channels = check_int("encoder 'example-patches'", "latent_channels", latent_channels)
        self.net = nn.Sequential(nn.PixelUnshuffle(factor), nn.Conv2d(3 * factor * factor, latent_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_decoder("example-patches")
class PatchDecoder(nn.Module):
    """The mirror of ``example-patches``: a 1x1 convolution, then depth-to-space (takes the encoder's parameters)."""

    def __init__(self, latent_channels: int = 12, factor: int = 4):
        super().__init__()
        self.stride = check_int("decoder 'example-patches'", "factor", factor, 1, 16)
        self.in_channels = check_int("decoder 'example-patches'", "latent_channels", latent_channels)
        self.net = nn.Sequential(nn.Conv2d(latent_channels, 3 * factor * factor, 1), nn.PixelShuffle(factor))

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y)


@register_quantizer("example-tanh")
class TanhQuantizer(FixedRateQuantizer):
    """Fixed rate: ``(tanh(y) + 1) / 2`` on ``2**bits`` levels, straight-through rounding in training."""

    plugin_name = "example-tanh"

    def to_grid(self, y: Tensor) -> Tensor:
        return (torch.tanh(y) + 1) / 2 * (self.levels - 1)

    def from_grid(self, v_hat: Tensor) -> Tensor:
        return v_hat / (self.levels - 1) * 2 - 1

    def quantize_train(self, v: Tensor) -> Tensor:
        return v + (torch.round(v) - v).detach()


@register_loss("example-l1")
class L1Loss(nn.Module):
    """Mean absolute error between the image and its reconstruction."""

    def forward(self, x: Tensor, out: dict[str, Any]) -> Tensor:
        return (out["x_hat"] - x).abs().mean()


@register_callback("example-steps")
class StepCounter(Callback):
    """Counts optimiser steps (kept across a resume) and writes ``steps.json`` in the run folder at the end."""

    def __init__(self, filename: str = "steps.json"):
        self.filename = filename
        self.steps = 0

    def on_step_end(self, ctx: TrainContext) -> None:
        self.steps += 1

    def _write(self, ctx: TrainContext, status: str) -> None:
        if ctx.info.is_main:
            (ctx.out / self.filename).write_text(json.dumps({"steps": self.steps, "status": status}) + "\n")

    def on_train_end(self, ctx: TrainContext) -> None:
        self._write(ctx, "finished")

    def on_exception(self, ctx: TrainContext, exc: BaseException) -> None:
        self._write(ctx, f"failed: {type(exc).__name__}")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])
