"""A plan sized to a time budget: measure the pace, then set the planned epochs so the schedule ends in time.

``--time-budget`` alone only stops a run early: a cosine schedule planned
for more epochs than the budget allows is cut off before its learning rate
has come down. With ``--fit-schedule`` the built-in ``fit-schedule``
callback measures the run as it goes and sets the plan (``train.epochs``,
the loop's length and the schedule's horizon) to what the budget allows:

- at the end of the second epoch (or of the first, when waiting for a second
  would spend more than ``wait_fraction`` of the budget), from that epoch's
  wall-clock time, end to end: its steps, validation, checkpoints, log and
  figures;
- within the first epoch, when epochs are long (the first would end past
  ``wait_fraction`` of the budget), from the step rate over ``probe_steps``
  steps after ``skip_steps`` start-up steps.

The plan is a whole number of epochs, ``floor((budget * (1 - margin) -
elapsed) / epoch time)`` more than those done (at least the one in
progress). It is decided once, on rank 0, and sent to every process; the
resolved recipe (``recipe.toml`` and the checkpoints) records it, so a
resumed run keeps it. ``--time-budget`` still stops the run if the machine
slows down (at an epoch boundary, as always); the final evaluation runs
after the budget.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from rdkit_ae.files import atomic_write_text
from rdkit_ae.recipe import load_recipe
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext

clock = time.perf_counter  # the pace's clock (a test may replace it with a simulated one)


def planned_epochs(budget_s: float, elapsed_s: float, done: float, epoch_s: float, margin: float = 0.05) -> int:
    """Whole epochs in the plan: ``done`` (may be fractional, mid-epoch) plus what fits in the budget left.

    At least the epoch in progress (``ceil(done)``, and never fewer than 1):
    a plan shorter than what is done would end the run before the schedule
    could be applied.
    """
    left = budget_s * (1.0 - margin) - elapsed_s
    more = left / epoch_s if epoch_s > 0 else 0.0
    return max(1, math.ceil(done), math.floor(done + max(0.0, more)))


class FitSchedule(Callback):
    """Size the planned epochs (and the cosine schedule) to ``minutes`` from the pace measured in this run."""

    builtin = True

    def __init__(
        self,
        minutes: float,
        margin: float = 0.05,
        probe_steps: int = 20,
        skip_steps: int = 2,
        wait_fraction: float = 0.1,
    ):
        self.budget_s = float(minutes) * 60.0
        self.margin, self.wait_fraction = float(margin), float(wait_fraction)
        self.probe_steps, self.skip_steps = int(probe_steps), int(skip_steps)
        self.planned: int | None = None  # the decided plan (kept in last.pt: a resume does not decide again)
        self.pace: dict[str, Any] = {}  # how it was decided (kept with the plan)
        self.start = self.last_end = self.probe_start = 0.0
        self.steps = self.epoch_steps = 0  # steps in this invocation / in the epoch in progress
        self.epochs = 0  # epochs ended in this invocation
        self.step_s: float | None = None

    def on_train_start(self, ctx: TrainContext) -> None:
        self.start = self.last_end = clock()

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.epoch_steps = 0

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.planned is not None:
            return
        self.steps += 1
        self.epoch_steps += 1
        if self.steps == self.skip_steps:
            self.probe_start = clock()
        elif self.steps == self.skip_steps + self.probe_steps:  # the same step on every rank
            now = clock()
            self.step_s = (now - self.probe_start) / self.probe_steps
            epoch_s = self.step_s * ctx.steps_per_epoch
            left_in_epoch = (ctx.steps_per_epoch - ctx.position.batch) * self.step_s
            # Long epochs: a decision at this epoch's end would come too late.
            if dist.broadcast_object(now + left_in_epoch - self.start > self.wait_fraction * self.budget_s):
                done = ctx.epoch + ctx.position.batch / ctx.steps_per_epoch
                self._decide(ctx, now, done, epoch_s, "steps")

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if self.planned is not None:
            return
        now = clock()
        self.epochs += 1
        # One whole cycle: steps, validation, checkpoints, log, figures (from the previous epoch's end).
        epoch_s, self.last_end = now - self.last_end, now
        if 0 < self.epoch_steps < ctx.steps_per_epoch:  # a partial epoch (a resumed run): scale it up
            epoch_s *= ctx.steps_per_epoch / self.epoch_steps
        late = now - self.start + epoch_s > self.wait_fraction * self.budget_s  # a second epoch would end too late
        if dist.broadcast_object(self.epochs >= 2 or late):  # rank 0's clock decides for every rank
            self._decide(ctx, now, float(ctx.epoch), epoch_s, "epoch")

    def _decide(self, ctx: TrainContext, now: float, done: float, epoch_s: float, how: str) -> None:
        planned = planned_epochs(self.budget_s, now - self.start, done, epoch_s, self.margin)
        planned, epoch_s = dist.broadcast_object((planned, epoch_s))
        self.pace = {"measured_from": how, "epoch_s": epoch_s, "step_s": self.step_s, "at_epoch": done}
        self.apply(ctx, planned)

    def apply(self, ctx: TrainContext, epochs: int) -> None:
        """Make ``epochs`` the run's plan: the loop's length, the schedule's horizon and the stored recipe."""
        self.planned = int(epochs)
        ctx.plan_epochs = self.planned
        interval = ctx.schedule.interval
        ctx.schedule.set_horizon(self.planned if interval == "epoch" else self.planned * ctx.steps_per_epoch)
        ctx.recipe = load_recipe(ctx.recipe, {"train.epochs": self.planned})
        ctx.extras["fit_schedule"] = {"planned_epochs": self.planned, **self.pace}
        if ctx.info.is_main:
            atomic_write_text(ctx.out / "recipe.toml", ctx.recipe.to_toml())

    def state_dict(self) -> dict[str, Any]:
        return {} if self.planned is None else {"planned_epochs": self.planned, **self.pace}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # The plan is already in the resumed recipe (train.epochs); only remember that it was decided.
        if state.get("planned_epochs") is not None:
            self.planned = int(state["planned_epochs"])
            self.pace = {k: v for k, v in state.items() if k != "planned_epochs"}
