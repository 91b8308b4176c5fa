"""The training loop: epochs of steps, validation, and the points where callbacks and Ctrl-C are heard.

The plan of a run is its recipe (``[train] epochs``, schedule, ...) and its
data; ``max_steps`` and ``time_budget`` only stop a run early (they are
callbacks), so a stopped or interrupted run resumed with ``resume=`` ends
exactly where an uninterrupted one would (bit for bit on the CPU with the
same thread count).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Sequence

import torch

from rdkit_ae.data.datasets import loader, train_batches
from rdkit_ae.errors import RdkitError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.callbacks import Callback, CallbackList, recipe_callbacks
from rdkit_ae.training.checkpoints import Checkpointer
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.datainit import DataInit
from rdkit_ae.training.figures import Figures
from rdkit_ae.training.finish import finish
from rdkit_ae.training.fit_schedule import FitSchedule
from rdkit_ae.training.optim import TrainStep
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.plan import plan_run
from rdkit_ae.training.reporting import ConsoleReporter, Reporter, SilentReporter
from rdkit_ae.training.results import TrainingInterrupted, TrainResult
from rdkit_ae.training.runlog import METRICS, MetricsLogger, epoch_record
from rdkit_ae.training.setup import build_context
from rdkit_ae.training.signals import StopRequest
from rdkit_ae.training.state import BEST, LAST
from rdkit_ae.training.stops import NonFiniteStop, StepLimit, TimeBudget
from rdkit_ae.training.validation import validate


def default_callbacks(options: TrainOptions, user: Sequence[tuple[str, Callback]], metrics: Path) -> CallbackList:
    """The built-in callbacks around the user's, in the order their hooks must run (see callbacks.py)."""
    cbs = CallbackList()
    cbs.add("data-init", DataInit())  # first: every other callback (e.g. an EMA copy) sees the initialised model
    if options.max_steps is not None:
        cbs.add("max-steps", StepLimit(options.max_steps))  # first: a stop at this step is seen by the checks
    cbs.add("nonfinite-stop", NonFiniteStop())  # before anything uses the step's weights
    for name, cb in user:
        cbs.add(name, cb)
    if options.fit_schedule and options.time_budget is not None:
        cbs.add("fit-schedule", FitSchedule(options.time_budget))  # before the checkpoint: it stores the plan
    cbs.add("checkpoint", Checkpointer(cbs.state_dict))  # after the user's: their on_epoch_end state is saved
    cbs.add("metrics-log", MetricsLogger(metrics))  # after the checkpoint: a logged epoch is always saved
    cbs.add("figures", Figures())
    if options.time_budget is not None:
        cbs.add("time-budget", TimeBudget(options.time_budget))  # last: it times whole epochs
    return cbs


class Trainer:
    """Runs one training invocation; :func:`rdkit_ae.training.train` is the public entry point."""

    def __init__(
        self, options: TrainOptions, callbacks: Sequence[Callback] = (), reporter: Reporter | None = None
    ) -> None:
        self.options = options
        self.info = dist.env_info()
        if reporter is None:
            quiet = options.quiet or not self.info.is_main
            reporter = SilentReporter() if quiet else ConsoleReporter()
        self.reporter = reporter
        self.extra = [(type(cb).__name__, cb) for cb in callbacks]  # callbacks given in Python, after the recipe's
        self.callbacks = CallbackList()

    def run(self) -> TrainResult:
        threads_before = torch.get_num_threads()
        created = False
        try:
            device = dist.resolve_device(self.options.device, self.info)
            created = dist.init(self.info, device)
            result = self._run(device)
            # All ranks arrive before any tears gloo down: a rank that destroys
            # its group while a peer still holds the connection can abort the
            # peer ("terminate called without an active exception").
            dist.barrier()
            return result
        finally:
            torch.set_num_threads(threads_before)
            dist.shutdown(created)

    def _run(self, device: torch.device) -> TrainResult:
        plan = plan_run(self.options, self.info)
        for note in plan.notes:
            self.reporter.note(note)
        torch.set_num_threads(plan.config.threads)
        user = recipe_callbacks(plan.recipe) + self.extra  # checked before the data is read
        ctx, step_fn = build_context(self.options, plan, self.info, device)
        self.callbacks = default_callbacks(self.options, user, ctx.out / METRICS)
        if plan.payload is not None:
            self.callbacks.load_state_dict(plan.payload.get("callbacks") or {})
        if ctx.epoch >= ctx.plan_epochs:
            raise RdkitError(
                f"the run in {ctx.out} already finished its {ctx.plan_epochs} epochs; "
                "pass --epochs N (more) to train longer"
            )
        try:
            return self._train(ctx, step_fn)
        except TrainingInterrupted:
            raise  # on_interrupt has run
        except BaseException as exc:
            self.callbacks.on_exception(ctx, exc)
            raise

    def _train(self, ctx: TrainContext, step_fn: TrainStep) -> TrainResult:
        self.callbacks.on_train_start(ctx)
        if self.info.is_main:
            atomic_write_bytes(ctx.out / "recipe.toml", lambda f: f.write(ctx.recipe.to_toml().encode("utf-8")))
        self.reporter.header(ctx)
        stop = StopRequest()
        with stop.installed():
            stopped = self._loop(ctx, step_fn, stop)
        try:
            return finish(ctx, self.callbacks, self.reporter, stopped)
        except KeyboardInterrupt:
            cfg, out = ctx.config, ctx.out
            # Training is over and saved; only the figures or the evaluation are missing.
            raise TrainingInterrupted(
                f"interrupted during the final evaluation; the checkpoints in {out} are complete; evaluate with: "
                f"rdkit eval {out / BEST} --data {cfg.data} --split val --val-fraction {cfg.val_fraction:g} "
                f"--seed {ctx.recipe.train['seed']}" + (f" --limit {cfg.limit_val}" if cfg.limit_val else ""),
                out,
                out / BEST,
                signal.SIGINT,
            ) from None

    def _loop(self, ctx: TrainContext, step_fn: TrainStep, stop: StopRequest) -> str:
        start = time.perf_counter()
        pos = ctx.position
        while pos.epoch < ctx.plan_epochs:
            self.callbacks.on_epoch_start(ctx)
            complete, train_time, images = self._train_epoch(ctx, step_fn, stop)
            dist.sync_buffers(ctx.model)  # every rank evaluates rank 0's model
            ctx.val_metrics = validate(
                ctx.model_for_eval,
                ctx.objective,
                ctx.val_set,
                int(ctx.recipe.train["batch_size"]),
                ctx.device,
                self.info,
                self.options.workers,
            )
            self.callbacks.on_validation(ctx, ctx.val_metrics)
            ctx.record = epoch_record(ctx, complete, train_time, images, time.perf_counter() - start)
            if complete:
                pos.next_epoch()
                if ctx.schedule.interval == "epoch":
                    ctx.schedule.step()
            val_loss = ctx.val_metrics["val_loss"]
            ctx.improved = pos.best_loss is None or (val_loss is not None and val_loss < pos.best_loss)
            if ctx.improved:
                pos.best_loss, pos.best_epoch = val_loss, ctx.record["epoch_progress"]
            self.callbacks.on_epoch_end(ctx)  # checkpoints, metrics.jsonl, the time budget, ...
            self.reporter.epoch(ctx, ctx.record)
            flags = dist.all_reduce(torch.tensor([float(ctx.stop_reason is not None), float(stop.requested)]), "max")
            # A stop already decided (e.g. max_steps reached at this boundary) ends the run normally even when
            # Ctrl-C arrived meanwhile: the run is saved and complete, so it is finished, not left to resume.
            if flags[0].item() and pos.epoch < ctx.plan_epochs:
                return self._agreed_stop(ctx)
            if flags[1].item():
                self._interrupted(ctx, stop)
        return "completed"

    def _train_epoch(self, ctx: TrainContext, step_fn: TrainStep, stop: StopRequest) -> tuple[bool, float, int]:
        """Train from the current position to the end of the epoch (or a stop); returns (complete, s, images)."""
        info, pos, device = self.info, ctx.position, ctx.device
        ctx.train_set.set_epoch(pos.epoch)
        seed, batch_size = int(ctx.recipe.train["seed"]), int(ctx.recipe.train["batch_size"])
        batches = train_batches(ctx.train_set, batch_size, pos.epoch, seed, info.rank, info.world_size, skip=pos.batch)
        acc = pos.acc if pos.acc is not None else torch.zeros(len(ctx.term_names), device=device)
        pos.acc = acc
        # A host sync per step is free on the CPU; on a GPU, check every few steps (and at the epoch's end).
        sync_every = 1 if device.type == "cpu" else 25
        non_blocking = device.type == "cuda"
        view = self.reporter.epoch_progress(ctx)
        images = 0
        ctx.model.train()
        t0 = time.perf_counter()
        try:
            for x in loader(ctx.train_set, batches, workers=self.options.workers, pin_memory=non_blocking):
                x = x.to(device, non_blocking=non_blocking)
                ctx.losses = step_fn(x)
                acc += ctx.losses
                pos.step += 1
                pos.batch += 1
                images += x.size(0)
                if ctx.schedule.interval == "step":
                    ctx.schedule.step()
                ctx.sync_due = pos.step % sync_every == 0 or pos.batch >= ctx.steps_per_epoch
                self.callbacks.on_step_end(ctx)  # the non-finite check raises here
                if ctx.sync_due or ctx.stop_reason is not None:
                    if dist.all_reduce(torch.tensor([float(stop.requested)]), "max").item():
                        self._interrupted(ctx, stop)
                view.advance(pos.batch, acc, images * info.world_size, t0)
                if ctx.stop_reason is not None:
                    break
        finally:
            view.close()
        return pos.batch >= ctx.steps_per_epoch, time.perf_counter() - t0, images * info.world_size

    def _agreed_stop(self, ctx: TrainContext) -> str:
        """The stop reason, the same on every rank (the first rank that asked names it)."""
        reasons = [r for r in dist.gather_objects(ctx.stop_reason) if r is not None]
        ctx.stop_reason = reasons[0]
        return reasons[0]

    def _interrupted(self, ctx: TrainContext, stop: StopRequest) -> None:
        self.callbacks.on_interrupt(ctx)  # last.pt (if steps were done since it was written), loss curves
        signum = stop.signum or signal.SIGINT
        p, out = ctx.position, ctx.out
        where = f"epoch {p.epoch + 1}, batch {p.batch}" if p.batch else f"the end of epoch {p.epoch}"
        world = self.info.world_size
        how = f"torchrun --nproc_per_node={world} -m rdkit_ae train" if self.info.enabled else "rdkit train"
        raise TrainingInterrupted(
            f"interrupted ({signal.Signals(signum).name}) at {where} (step {p.step}); checkpoint saved in "
            f"{out / LAST}; resume with: {how} --resume {out}",
            out,
            out / LAST,
            signum,
            self.info.is_main,
        )
