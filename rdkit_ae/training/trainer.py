"""``train(recipe, data)``: optimise a recipe's model and leave a run folder.

The run folder holds ``recipe.toml`` (resolved), ``last.pt`` and ``best.pt``
(by validation loss; weights, optimiser/schedule state, position, RNG states,
callback states and the recipe, all loadable with
``torch.load(weights_only=True)``), ``metrics.jsonl``, ``loss_curves.png``,
``comparison.png``, ``eval.json`` (real bitstreams on the validation split)
and ``run.json``.

The pieces live in their own modules (options, plan, state, setup, loop,
callbacks, stops, checkpoints, runlog, figures, reporting, finish); the names
other code imported from here stay importable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rdkit_ae.recipe import Recipe
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.checkpoints import finalize_checkpoint
from rdkit_ae.training.loop import Trainer
from rdkit_ae.training.optim import (
    SCHEDULE_INTERVALS,
    LRSchedule,
    TrainStep,
    build_optimizers,
    build_training,
    split_parameters,
)
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.results import NonFiniteLossError, TrainingInterrupted, TrainResult
from rdkit_ae.training.state import BEST, LAST

__all__ = [
    "BEST",
    "LAST",
    "SCHEDULE_INTERVALS",
    "LRSchedule",
    "NonFiniteLossError",
    "TrainOptions",
    "TrainResult",
    "TrainStep",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizers",
    "build_training",
    "finalize_checkpoint",
    "split_parameters",
    "train",
]


def train(
    recipe: Recipe | str | Path | None,
    data: str | Path = "cifar10",
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    epochs: int | None = None,
    max_steps: int | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    time_budget: float | None = None,
    val_fraction: float = 0.1,
    seed: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    evaluate: bool = True,
    workers: int = 0,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a recipe's model on ``data`` and return where everything went.

    Args:
        recipe: a :class:`Recipe`, zoo name or .toml path (may be None with ``resume``).
        data: ``cifar10``, a .npz, an image folder, or a folder holding cifar-10-batches-py.
        out: run folder (default ``runs/<recipe>-<timestamp>``); must not hold a run yet.
        overrides: ``dotted.key=value`` recipe overrides.
        epochs: planned epochs (sets ``train.epochs``; the schedule spans them).
        max_steps: stop once the run has done this many optimiser steps in total.
        limit_train, limit_val: use only the first N images of each split.
        time_budget: minutes; stops at an epoch boundary (no epoch is started
            that is not expected to end within it); the final evaluation still runs.
        val_fraction: validation share for sources without an official split.
        seed: sets ``train.seed`` (data split, order, augmentation, init).
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        threads: torch CPU threads for this call (restored afterwards).
        resume: a run folder (or its last.pt) to continue.
        quiet: print nothing.
        evaluate: finish with the real-bitstream evaluation (eval.json).
        workers: DataLoader worker processes (0: load in the main process).
        callbacks: :class:`Callback` objects to run after the recipe's ``[train] callbacks``
            (their state is saved in last.pt under their class name; pass the same ones on resume).

    Raises:
        TrainingInterrupted: after Ctrl-C/SIGTERM, once last.pt is saved.
        NonFiniteLossError: the loss became NaN/inf (last.pt keeps the last good state).
        RdkitError: bad arguments, recipe or data.
    """
    options = TrainOptions(
        recipe=recipe,
        data=str(data),
        out=Path(out) if out is not None else None,
        overrides=overrides,
        epochs=epochs,
        max_steps=max_steps,
        limit_train=limit_train,
        limit_val=limit_val,
        time_budget=time_budget,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        threads=threads,
        resume=Path(resume) if resume is not None else None,
        quiet=quiet,
        evaluate=evaluate,
        workers=workers,
    )
    return Trainer(options, callbacks).run()
