"""The ``ema`` training callback: an exponential moving average of the weights is validated, saved and evaluated.

``[train] callbacks = [{ name = "ema", decay = 0.999 }]``. The average is
torch's :class:`~torch.optim.swa_utils.AveragedModel` with a warm-up of the
decay, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (a plain 0.999
average from step 0 keeps a fifth of the random initialisation after 1,600
steps). It is updated after every optimiser step and set as
``ctx.eval_model``: validation, best.pt and the final evaluation use it,
last.pt keeps the trained weights (and the average, to resume exactly).

Floating-point buffers (batch-norm statistics, ...) are averaged too;
other buffers are copied. The EntropyBottleneck ``quantiles`` are copied
from the trained model, not averaged: the aux loss fits them to the
trained model's latents, and the average's entropy tables are built from
them at the end.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from rdkit_ae.errors import PluginError
from rdkit_ae.registry import register
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext


def warmup_decay(decay: float, n: int) -> float:
    """The decay used for the update after ``n`` earlier ones: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1.0 + n) / (10.0 + n))


@register("callback", "ema")
class EMA(Callback):
    """Exponential moving average of the weights (with a warm-up of the decay), used for validation and best.pt.

    Args:
        decay: the decay after the warm-up, in [0, 1) (default 0.999).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after n updates
            (default true); false: ``decay`` from the first update.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise PluginError(f"callback 'ema': decay must be a number in [0, 1); got {decay!r}")
        if not isinstance(warmup, bool):
            raise PluginError(f"callback 'ema': warmup must be true or false; got {warmup!r}")
        self.decay, self.warmup = float(decay), warmup
        self.ema: AveragedModel | None = None
        self.updates = 0  # the average's n_averaged, kept on the host (reading the buffer would sync a GPU)
        self.pending: Mapping[str, Any] | None = None
        self._copied: list[tuple[Tensor, Tensor]] = []

    def _average(
        self, averaged: list[Tensor] | tuple[Tensor, ...], current: list[Tensor] | tuple[Tensor, ...], _n: Any
    ) -> None:
        d = warmup_decay(self.decay, self.updates) if self.warmup else self.decay
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (counters): an average means nothing, keep the trained model's
            torch._foreach_copy_(averaged, current)

    def on_train_start(self, ctx: TrainContext) -> None:
        self.ema = AveragedModel(ctx.model, multi_avg_fn=self._average, use_buffers=True)
        if self.pending is not None:
            self._restore(self.pending)
            self.pending = None
        self.updates = int(self.ema.n_averaged)
        live = dict(ctx.model.named_parameters())
        self._copied = [(p, live[k]) for k, p in self.ema.module.named_parameters() if k.endswith("quantiles")]
        ctx.eval_model = self.ema.module

    @torch.no_grad()
    def _restore(self, state: Mapping[str, Any]) -> None:
        """Load a saved average; integer buffers (entropy-coder tables, counters) stay the trained model's.

        Those are copied at every update anyway, and a resumed model carries
        the tables last.pt was finalised with, which the saved average lacks.
        """
        assert self.ema is not None
        module = self.ema.module
        weights = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        weights.update({k: b for k, b in module.named_buffers() if not torch.is_floating_point(b)})
        module.load_state_dict(weights)
        self.ema.n_averaged.copy_(state["n_averaged"])

    @torch.no_grad()
    def on_step_end(self, ctx: TrainContext) -> None:
        assert self.ema is not None
        self.ema.update_parameters(ctx.model)
        self.updates += 1
        for averaged, trained in self._copied:
            averaged.copy_(trained)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pending = state["ema"]  # applied once on_train_start has built the average


__all__ = ["EMA", "warmup_decay"]
