"""Training state that ``last.pt`` carries: position, RNG streams, the payload written and restored.

Everything here is plain data (tensors, numbers, strings, lists, dicts), so a
checkpoint stays loadable with ``torch.load(weights_only=True)``. The helpers
are testable without a training loop: they take the pieces, not the trainer.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from rdkit_ae.errors import CheckpointError
from rdkit_ae.text import one_line
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.optim import LRSchedule

LAST, BEST = "last.pt", "best.pt"
# What a checkpoint must hold to be resumed (best.pt and last.pt both do).
TRAINING_KEYS = ("optimizer", "scheduler", "position", "run", "rng")


@dataclass
class Position:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the epoch in progress
    step: int = 0  # optimiser steps in total
    best_loss: float | None = None
    best_epoch: float | None = None
    acc: Tensor | None = None  # loss sums of the epoch in progress (over ranks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> "Position":
        return cls(int(p["epoch"]), int(p["batch"]), int(p["step"]), p.get("best_loss"), p.get("best_epoch"))

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch = 0
        self.acc = None


@dataclass
class RunConfig:
    """How the data was read and the run was laid out; stored as ``run`` in last.pt and in run.json."""

    data: str
    val_fraction: float
    limit_train: int | None
    limit_val: int | None
    world_size: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- RNG state, stored as tensors and plain lists (weights_only-loadable) ---------
def rng_capture() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_restore(state: Mapping[str, Any], rank_torch: Tensor | None = None) -> None:
    torch.set_rng_state((rank_torch if rank_torch is not None else state["torch"]).cpu())
    v, internal, gauss = state["python"]
    random.setstate((int(v), tuple(int(i) for i in internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- the payload of last.pt / best.pt besides the weights and recipe ---------------
def training_payload(
    position: Position,
    optimizer: torch.optim.Optimizer,
    aux_optimizer: torch.optim.Optimizer | None,
    schedule: LRSchedule,
    run: RunConfig,
    callbacks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The training state to store with the weights. Collective under torchrun: every rank calls it."""
    # The epoch's loss sums over all ranks; on resume rank 0 carries them.
    p = position
    acc = dist.all_reduce(p.acc.detach().clone()).cpu() if p.acc is not None and p.batch > 0 else None
    rng = rng_capture()
    rng["torch_ranks"] = dist.gather_objects(torch.get_rng_state())  # each rank's noise stream
    payload = {
        "optimizer": optimizer.state_dict(),
        "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer is not None else None,
        "scheduler": schedule.state_dict(),
        "position": p.to_dict(),
        "epoch_acc": acc,
        "rng": rng,
        "run": run.to_dict(),
    }
    if callbacks:
        payload["callbacks"] = dict(callbacks)
    return payload


def check_training_payload(payload: Mapping[str, Any], where: str) -> None:
    for key in TRAINING_KEYS:
        if key not in payload:
            raise CheckpointError(
                f"{where}: not a training checkpoint (no '{key}'); only runs of `rdkit train` can be resumed"
            )


def restore_training(
    payload: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    aux_optimizer: torch.optim.Optimizer | None,
    schedule: LRSchedule,
    where: str,
    info: dist.DistInfo = dist.DistInfo(),
    device: torch.device | str = "cpu",
) -> Position:
    """Load weights, optimisers, schedule and RNG streams from ``payload``; returns the position to go on from."""
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if aux_optimizer is not None:
            aux_optimizer.load_state_dict(payload["aux_optimizer"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: cannot restore the training state ({one_line(exc, 200)})") from None
    schedule.load_state_dict(payload["scheduler"])
    pos = Position.from_dict(payload["position"])
    acc = payload.get("epoch_acc")
    if acc is not None and pos.batch > 0:
        # The stored sums cover every rank; rank 0 carries them, the others add from zero.
        pos.acc = acc.to(device) if info.is_main else torch.zeros_like(acc, device=device)
    rng = payload["rng"]
    ranks = rng.get("torch_ranks")
    mine = ranks[info.rank] if ranks is not None and len(ranks) == info.world_size else None
    rng_restore(rng, mine)
    return pos
