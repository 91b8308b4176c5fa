"""What a training run hands back: its result, or the exceptions that end it early."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdkit_ae.errors import RdkitError


class NonFiniteLossError(RdkitError):
    """The loss became NaN or infinite; training stopped without overwriting the last good checkpoint."""


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM: a checkpoint was saved and training stopped cleanly.

    ``exit_code`` is 130 for SIGINT and 143 for SIGTERM (128 + signal number).
    """

    def __init__(self, message: str, out_dir: Path, checkpoint: Path | None, signum: int, is_main: bool = True):
        super().__init__(message)
        self.out_dir = out_dir
        self.checkpoint = checkpoint
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.is_main = is_main  # under torchrun only rank 0 should tell the user


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: list[dict[str, Any]]
    eval: dict[str, Any] | None
    stopped: str = "completed"  # completed, max_steps, time_budget (or a callback's reason)
    epochs: int = 0  # epochs completed
    steps: int = 0  # optimiser steps in total
