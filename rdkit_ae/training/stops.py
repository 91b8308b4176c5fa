"""Built-in callbacks that end a run early: a non-finite loss, ``max_steps`` and ``time_budget``."""

from __future__ import annotations

import math
import time

import torch

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import RdkitError
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.results import NonFiniteLossError
from rdkit_ae.training.state import LAST


class StepLimit(Callback):
    """Stop once the run has done ``max_steps`` optimiser steps in total (``--max-steps``)."""

    builtin = True

    def __init__(self, max_steps: int):
        self.max_steps = int(max_steps)

    def on_train_start(self, ctx: TrainContext) -> None:
        if ctx.step >= self.max_steps:
            raise RdkitError(
                f"the run in {ctx.out} already did {ctx.step} steps; raise --max-steps or drop it to go on"
            )

    def on_step_end(self, ctx: TrainContext) -> None:
        # A step count is the same on every process, so stopping right here keeps them in step.
        if ctx.step >= self.max_steps:
            ctx.request_stop("max_steps")


class NonFiniteStop(Callback):
    """Stop with a one-line error when the loss becomes NaN or infinite; last.pt keeps the last good state.

    The check reads the epoch's loss sums back to the host, so it runs only
    on steps where the loop syncs anyway (every step on the CPU, every few
    on a GPU, and always on an epoch's last step, before anything is saved).
    """

    builtin = True

    def on_step_end(self, ctx: TrainContext) -> None:
        acc = ctx.position.acc
        if acc is None or not (ctx.sync_due or ctx.stop_reason is not None):
            return
        bad = dist.all_reduce((~torch.isfinite(acc)).any().float().reshape(1), "max")
        if bad.item():
            raise NonFiniteLossError(self._message(ctx, acc.tolist()))

    @staticmethod
    def _message(ctx: TrainContext, values: list[float]) -> str:
        names = [n for n, v in zip(ctx.term_names, values) if not math.isfinite(v)] or ["loss"]
        kind = "nan" if any(math.isnan(v) for v in values) else "inf"
        last = ctx.out / LAST
        if last.is_file():
            try:
                p = load_checkpoint(last)["position"]
                where = f"the last good checkpoint {last} (epoch {p['epoch']}, step {p['step']}) is kept"
            except RdkitError:
                where = f"{last} is kept"
        else:
            where = "no checkpoint was written yet"
        return (
            f"the loss became {kind} ({', '.join(names)}) by step {ctx.step} (epoch {ctx.epoch + 1}); "
            f"training stopped and {where}; try a lower learning rate (--set train.optimizer.lr=...) "
            "or gradient clipping (--set train.clip_grad=1.0)"
        )


class TimeBudget(Callback):
    """Stop at an epoch boundary when the next epoch is not expected to end within ``minutes``.

    The clock starts with this invocation (a resumed run gets a new budget).
    """

    builtin = True

    def __init__(self, minutes: float):
        self.seconds = float(minutes) * 60.0
        self.start = self.epoch_start = 0.0
        self.epoch_times: list[float] = []

    def on_train_start(self, ctx: TrainContext) -> None:
        self.start = time.perf_counter()

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, ctx: TrainContext) -> None:
        now = time.perf_counter()
        self.epoch_times.append(now - self.epoch_start)
        if ctx.epoch < ctx.plan_epochs:
            # Never start an epoch that is not expected to end within the budget.
            if now - self.start + sum(self.epoch_times) / len(self.epoch_times) > self.seconds:
                ctx.request_stop("time_budget")
