"""The options of one training invocation, spelled once: the CLI, ``train()`` and the loop share them.

The dataclass is the only place that names an option, its type and its
default: ``train(**options)`` is checked against its fields
(:meth:`TrainOptions.from_args`) and ``rdkit train`` passes the options it
was given, named as the fields, to the same method.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from rdkit_ae.errors import RdkitError
from rdkit_ae.recipe import Recipe

POSITIONAL = ("recipe", "data", "out")  # train(recipe, data, out, **options)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run is asked to do besides its recipe's ``[train]`` table.

    The plan of a run is its recipe and its data; ``max_steps`` and
    ``time_budget`` only stop a run early, they never reshape the plan,
    unless ``fit_schedule`` asks to size the planned epochs (and so the
    learning-rate schedule) to the time budget from the measured pace.
    Bad values raise a one-line :class:`RdkitError` when the options are made.
    """

    recipe: Recipe | str | Path | None = None  # a Recipe, zoo name or .toml path (None with ``resume``)
    data: str = "cifar10"  # cifar10, a .npz, an image folder, or a folder holding cifar-10-batches-py
    out: Path | None = None  # run folder (default runs/<recipe>-<timestamp>); must not hold a run yet
    overrides: Sequence[str] | Mapping[str, Any] = ()  # ``dotted.key=value`` recipe overrides
    epochs: int | None = None  # planned epochs (sets train.epochs; the schedule spans them)
    max_steps: int | None = None  # stop once the run has done this many optimiser steps in total
    limit_train: int | None = None  # use only the first N training images
    limit_val: int | None = None  # use only the first N validation images
    time_budget: float | None = None  # minutes; stops at an epoch boundary
    fit_schedule: bool = False  # size the planned epochs to time_budget from the measured pace (replaces epochs)
    val_fraction: float = 0.1  # validation share for sources without an official split
    seed: int | None = None  # sets train.seed
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int | None = None  # torch CPU threads for this call (None or 0: torch's current setting)
    resume: Path | None = None  # a run folder (or its last.pt) to continue
    quiet: bool = False  # print nothing
    evaluate: bool = True  # finish with the real-bitstream evaluation (eval.json)
    workers: int = 0  # DataLoader worker processes (0: load in the main process)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the paths once, here
        set_(self, "data", str(self.data))
        if self.out is not None:
            set_(self, "out", Path(self.out))
        if self.resume is not None:
            set_(self, "resume", Path(self.resume))
        if isinstance(self.overrides, (list, str)):
            set_(self, "overrides", tuple([self.overrides] if isinstance(self.overrides, str) else self.overrides))
        self.check()

    @classmethod
    def from_args(cls, *args: Any, **kwargs: Any) -> TrainOptions:
        """``train()``'s arguments: up to three positional (recipe, data, out), the other fields by name.

        An unknown name raises ``TypeError`` (with a "did you mean" and the
        known names), as a Python function would; values are checked as usual.
        """
        if len(args) > len(POSITIONAL):
            raise TypeError(f"train() takes at most {len(POSITIONAL)} positional arguments ({', '.join(POSITIONAL)})")
        known = [f.name for f in fields(cls)]
        for name, value in zip(POSITIONAL, args):
            if name in kwargs:
                raise TypeError(f"train() got {name!r} both by position and by name")
            kwargs[name] = value
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"train() got an unknown option {name!r}{hint} (options: {', '.join(known)})")
        return cls(**kwargs)

    def check(self) -> None:
        for name in ("epochs", "max_steps", "limit_train", "limit_val"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise RdkitError(f"{_flag(name)} must be a positive integer, got {value!r}")
        if self.time_budget is not None and not (_is_number(self.time_budget) and self.time_budget > 0):
            raise RdkitError(f"--time-budget must be a positive number of minutes, got {self.time_budget!r}")
        if not (_is_number(self.val_fraction) and 0.0 < self.val_fraction < 1.0):
            raise RdkitError(f"--val-fraction must be between 0 and 1, got {self.val_fraction!r}")
        if self.threads is not None and not (_is_int(self.threads) and self.threads >= 0):
            raise RdkitError(f"--threads must be a positive integer (0: torch's default), got {self.threads!r}")
        if not (_is_int(self.workers) and self.workers >= 0):
            raise RdkitError(f"--workers must be 0 or more, got {self.workers!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise RdkitError(f"--seed must be an integer, got {self.seed!r}")
        if not isinstance(self.device, str) or not self.device.strip():
            raise RdkitError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self._check_fit()

    def _check_fit(self) -> None:
        if not isinstance(self.fit_schedule, bool):
            raise RdkitError(f"--fit-schedule is a switch (True or False), got {self.fit_schedule!r}")
        if self.fit_schedule and self.time_budget is None:
            raise RdkitError("--fit-schedule sizes the plan to --time-budget MIN: give a time budget")
        if self.fit_schedule and self.epochs is not None:
            raise RdkitError("--fit-schedule sets the planned epochs from the time budget: drop --epochs")
