"""Training a sweep point: the train function, its outcome, and recognising a run that already finished."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rdkit_ae.bench.cache import file_sha, read_json
from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import RdkitError
from rdkit_ae.recipe import Recipe
from rdkit_ae.training import train
from rdkit_ae.training.checkpoints import finalize_checkpoint

BEST, LAST = "best.pt", "last.pt"  # the checkpoints of an `rdkit train` run folder


@dataclass
class TrainOutcome:
    """What training a point gave: its checkpoint (and hash), or why it failed. ``info()`` is done.json."""

    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    train_seconds: float | None = None  # None when taken from the cache or recovered
    stopped: str | None = None
    epochs: int | None = None
    steps: int | None = None
    cached: bool = False  # nothing trained in this call
    failure: str | None = None  # the message when training failed (left out of the curves)

    @property
    def trained(self) -> bool:
        return not self.cached and self.failure is None

    def info(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in ("checkpoint", "train_seconds", "stopped", "epochs", "steps", "checkpoint_sha256")}

    @classmethod
    def from_info(cls, info: dict[str, Any], cached: bool) -> TrainOutcome:
        keys = ("checkpoint", "checkpoint_sha256", "train_seconds", "stopped", "epochs", "steps")
        return cls(**{k: info.get(k) for k in keys}, cached=cached)


def train_point(train_fn: Callable[..., Any] | None, recipe: Recipe | None, **kwargs: Any) -> Any:
    """Call ``train_fn`` (default :func:`rdkit_ae.training.train`) with the sweep's keyword arguments."""
    return (train_fn or train)(recipe, **kwargs)


def _recovered(ckpt: Path, stopped: Any, epochs: Any, steps: Any) -> TrainOutcome:
    return TrainOutcome(
        checkpoint=str(ckpt.resolve()),
        checkpoint_sha256=file_sha(ckpt),
        stopped=stopped,
        epochs=epochs,
        steps=steps,
        cached=True,
    )


def _stored_epochs(payload: dict[str, Any], path: Path) -> int | None:
    try:
        return int(Recipe.from_toml(payload["recipe"], "recipe", str(path)).train["epochs"])
    except (RdkitError, KeyError, TypeError, ValueError):
        return None


def finished_run(train_dir: Path, recipe: Recipe, budget: dict[str, Any]) -> TrainOutcome | None:
    """The outcome of a training that finished but was not recorded (the sweep was stopped), else None.

    Finished means the trainer wrote ``run.json`` (its last write), or its
    ``last.pt`` is at the end of the plan (the budget's ``max_steps``, or the
    epochs of the recipe stored in it) and only the closing bookkeeping was
    cut short. Training
    such a run again would only repeat it; resuming it is refused by the
    trainer.
    """
    best, last = train_dir / BEST, train_dir / LAST
    run = read_json(train_dir / "run.json")
    if isinstance(run, dict) and best.is_file():
        return _recovered(best, run.get("stopped"), run.get("epochs"), run.get("steps"))
    if not last.is_file():
        return None
    try:
        payload = load_checkpoint(last, map_location="cpu")
        position: Any = payload.get("position")
        epoch, step = int(position["epoch"]), int(position["step"])
    except (RdkitError, KeyError, TypeError, ValueError, AttributeError):
        return None  # not a trainer's checkpoint (or unreadable): let the caller resume or start over
    # The run's own plan: the epochs its stored recipe holds (fit_schedule sizes them while training).
    plan_epochs = _stored_epochs(payload, last) or budget.get("epochs", recipe.train.get("epochs"))
    max_steps = budget.get("max_steps")
    if plan_epochs is not None and epoch >= plan_epochs:
        stopped = "completed"
    elif max_steps is not None and step >= max_steps:
        stopped = "max_steps"
    else:
        return None
    try:
        for path in (last, best):
            if path.is_file():
                finalize_checkpoint(path)  # the entropy tables the trainer's end would have stored
    except RdkitError:
        return None
    return _recovered(best if best.is_file() else last, stopped, epoch, step)
