"""The state of a running training that the loop shares with its callbacks, reporter and finishing steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rdkit_ae.data.datasets import ImageDataset
from rdkit_ae.data.sources import ImageSet
from rdkit_ae.model import Objective
from rdkit_ae.recipe import Recipe
from rdkit_ae.training.distributed import DistInfo
from rdkit_ae.training.optim import LRSchedule
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.results import TrainResult
from rdkit_ae.training.state import Position, RunConfig


@dataclass
class TrainContext:
    """One run's model, optimisers, data and progress; every callback hook receives it.

    Callbacks read it and may change what they own: ``eval_model`` (the model
    that is validated, saved as best.pt and evaluated at the end, e.g. an
    EMA copy), ``request_stop``, optimiser settings. The loop sets
    ``losses`` after every step, ``val_metrics`` after validation, ``record``
    before ``on_epoch_end`` and ``result`` before ``on_train_end``.
    """

    options: TrainOptions
    recipe: Recipe
    config: RunConfig
    out: Path
    info: DistInfo
    device: torch.device
    model: nn.Module  # the model being trained (not the DDP wrapper)
    objective: Objective
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer | None
    schedule: LRSchedule
    position: Position
    train_images: ImageSet
    val_images: ImageSet
    train_set: ImageDataset
    val_set: ImageDataset
    plan_epochs: int
    steps_per_epoch: int
    term_names: list[str]  # names of ``losses``: total "loss", each weighted term, then "aux" if any
    resumed: bool = False
    losses: Tensor | None = None  # the last step's detached losses (on the device: read sparingly)
    sync_due: bool = False  # this step is one where the loop reads values back to the host anyway
    val_metrics: dict[str, Any] | None = None
    record: dict[str, Any] | None = None  # the last metrics.jsonl record
    improved: bool = False  # the last validation was the best so far
    eval_model: nn.Module | None = None  # substitute for ``model`` in validation, best.pt and the final evaluation
    final_model: nn.Module | None = None  # the best model as stored (rank 0, set before on_train_end)
    result: TrainResult | None = None
    stop_reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # free room for callbacks to share values

    @property
    def model_for_eval(self) -> nn.Module:
        return self.eval_model if self.eval_model is not None else self.model

    @property
    def epoch(self) -> int:
        return self.position.epoch

    @property
    def step(self) -> int:
        return self.position.step

    def request_stop(self, reason: str) -> None:
        """Stop at the end of this epoch (or right after this step, when asked from ``on_step_end``).

        From ``on_step_end`` the decision must be the same on every process
        (e.g. a step count); other hooks run where the processes agree anyway.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
