"""Training state that ``last.pt`` carries: position, RNG streams, the payload written and restored.

Everything here is plain data (tensors, numbers, strings, lists, dicts), so a
checkpoint stays loadable with ``torch.load(weights_only=True)``. The helpers
are testable without a training loop: they take the pieces, not the trainer.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
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


def run_name(checkpoint: str | Path) -> str:
    """What to call a checkpoint in a report: its run folder's name for ``runs/NAME/best.pt`` (or last.pt),
    else the file's stem."""
    p = Path(checkpoint)
    return p.parent.name if p.name in (BEST, LAST) else p.stem


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
    """Refuse, in one line, a checkpoint that cannot be resumed: missing or corrupted training state."""
    for key in TRAINING_KEYS:
        if key not in payload:
            raise CheckpointError(
                f"{where}: not a training checkpoint (no '{key}'); only runs of `rdkit train` can be resumed"
            )
    problem = training_state_problem(payload)
    if problem is not None:
        raise CheckpointError(f"{where}: corrupted training state: {problem}; resume from another checkpoint")


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _position_problem(p: Any) -> str | None:
    if not isinstance(p, Mapping) or not all(_count(p.get(k)) for k in ("epoch", "batch", "step")):
        return "'position' must hold whole numbers epoch, batch and step >= 0"
    if any(p.get(k) is not None and not _number(p.get(k)) for k in ("best_loss", "best_epoch")):
        return "'position' holds a best loss or epoch that is not a finite number"
    return None


def _run_problem(r: Any) -> str | None:
    ok = (
        isinstance(r, Mapping)
        and isinstance(r.get("data"), str)
        and _number(r.get("val_fraction"))
        and 0 <= r["val_fraction"] < 1
        and all(r.get(k) is None or _count(r.get(k)) for k in ("limit_train", "limit_val"))
        and _count(r.get("world_size", 1))
        and _count(r.get("threads", 0))
    )
    return None if ok else "'run' is not the run's settings (data, val_fraction, limits, world_size, threads)"


def _scheduler_problem(sch: Any) -> str | None:
    ok = isinstance(sch, Mapping) and _count(sch.get("t")) and isinstance(sch.get("base_lrs"), (list, tuple))
    if not ok or not all(_number(v) for v in sch["base_lrs"]):
        return "'scheduler' must hold a step count t and finite base learning rates"
    return None


def _rng_problem(rng: Any) -> str | None:
    if not isinstance(rng, Mapping):
        return "'rng' is not a set of random-number states"
    t = rng.get("torch")
    if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        return "'rng.torch' is not a torch generator state"
    py = rng.get("python")
    if not (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple)) and len(py[1]) == 625):
        return "'rng.python' is not a Python random state"
    n = rng.get("numpy")
    n = n if isinstance(n, Mapping) else {}
    keys, pos = n.get("keys"), n.get("pos")
    if not isinstance(keys, Tensor) or keys.numel() != 624 or not (_count(pos) and int(pos or 0) <= 624):
        return "'rng.numpy' is not a NumPy random state"
    ranks = rng.get("torch_ranks")
    if ranks is not None and not (isinstance(ranks, (list, tuple)) and all(isinstance(r, Tensor) for r in ranks)):
        return "'rng.torch_ranks' is not a list of generator states"
    return None


def training_state_problem(payload: Mapping[str, Any]) -> str | None:
    """What is wrong with the training state of a checkpoint (None: it can be restored), without restoring it."""
    for check, key in (
        (_position_problem, "position"),
        (_run_problem, "run"),
        (_scheduler_problem, "scheduler"),
        (_rng_problem, "rng"),
    ):
        problem = check(payload[key])
        if problem is not None:
            return problem
    acc = payload.get("epoch_acc")
    if acc is not None and not (
        isinstance(acc, Tensor) and acc.is_floating_point() and acc.dim() == 1 and bool(torch.isfinite(acc).all())
    ):
        return "'epoch_acc' is not a vector of finite loss sums"
    if not isinstance(payload["optimizer"], Mapping):
        return "'optimizer' is not an optimizer state"
    return None


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
    """Load weights, optimisers, schedule and RNG streams from ``payload``; returns the position to go on from.

    The state is checked first (:func:`check_training_payload`); anything the
    checks let through that still fails to load is reported in one line too.
    """
    check_training_payload(payload, where)
    try:
        return _restore(payload, model, optimizer, aux_optimizer, schedule, info, device)
    except Exception as exc:  # noqa: BLE001 - untrusted state: any failure to restore it is the file's
        raise CheckpointError(f"{where}: cannot restore the training state ({one_line(exc, 200)})") from None


def _restore(payload, model, optimizer, aux_optimizer, schedule, info, device) -> Position:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if aux_optimizer is not None:
        aux_optimizer.load_state_dict(payload["aux_optimizer"])
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
