"""Helpers for running training under ``torchrun`` (DistributedDataParallel).

One process per device; ``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK.
Backend: NCCL on CUDA, gloo on CPU. Only rank 0 writes files or prints;
every collective here is a no-op in a single process, so the trainer calls
them unconditionally.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

import torch
from torch import nn

from rdkit_ae.errors import RdkitError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What ``torchrun`` told this process (a single process when the variables are absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RdkitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    return DistInfo(rank, world, local)


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """``auto``: CUDA when present (this process's GPU under torchrun), else CPU."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RdkitError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RdkitError(f"device '{device}' asked for, but CUDA is not available here; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise RdkitError(f"device {dev} does not exist ({torch.cuda.device_count()} GPU(s) here)")
        torch.cuda.set_device(dev)
    return dev


def init(info: DistInfo, device: torch.device) -> bool:
    """Join the process group when launched by torchrun; returns True when this call created it."""
    import torch.distributed as dist

    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RdkitError("this PyTorch build has no torch.distributed; run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return True


def shutdown(created: bool) -> None:
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(t: torch.Tensor) -> torch.device:
    import torch.distributed as dist

    # NCCL only moves CUDA tensors; gloo only CPU ones (for our purposes).
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or max) a tensor over ranks, in place; returns it."""
    if not _active():
        return t
    import torch.distributed as dist

    red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    dev = _comm_device(t)
    if t.device == dev:
        dist.all_reduce(t, op=red)
        return t
    buf = t.to(dev)
    dist.all_reduce(buf, op=red)
    t.copy_(buf)
    return t


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s value on every rank (small picklable values, sent over the process group only)."""
    if not _active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not _active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def rank0_first(info: DistInfo, fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on rank 0 first (e.g. a download), then on the others; fail everywhere if rank 0 fails."""
    if not _active():
        return fn()
    result: T | None = None
    error: BaseException | None = None
    if info.is_main:
        try:
            result = fn()
        except BaseException as exc:  # re-raised below, after telling the other ranks
            error = exc
    ok = broadcast_object(error is None)
    if info.is_main:
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
    if not ok:
        raise RdkitError(f"rank 0 failed while {what}; see its message")
    return fn()


def from_rank0(info: DistInfo, fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result sent to every rank (e.g. a file only rank 0 can see).

    An RdkitError on rank 0 is raised there and, as the same message, on every other rank.
    """
    if not _active():
        return fn()
    if info.is_main:
        try:
            value = fn()
        except Exception as exc:  # tell the other ranks, which would otherwise wait forever
            broadcast_object(
                (False, str(exc) if isinstance(exc, RdkitError) else f"rank 0 failed: {type(exc).__name__}: {exc}")
            )
            raise
        broadcast_object((True, value))
        return value
    reply: tuple[bool, Any] = broadcast_object((False, None))  # replaced by rank 0's (ok, value or message)
    if not reply[0]:
        raise RdkitError(str(reply[1]))
    return reply[1]


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values into the given tensors on every rank."""
    if not _active():
        return
    import torch.distributed as dist

    for t in tensors:
        dev = _comm_device(t)
        buf = t.data if t.device == dev else t.data.to(dev)
        dist.broadcast(buf, src=src)
        if buf is not t.data:
            t.data.copy_(buf)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart per rank)."""
    broadcast_tensors([b for b in model.buffers() if b.numel() > 0])


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, ignore: Iterable[str] = ()) -> nn.Module:
    """DistributedDataParallel around ``model``; parameters named in ``ignore`` are left to the caller.

    The EntropyBottleneck ``quantiles`` take no gradient from the main loss
    (only from the separate aux loss), so DDP must not wait for them; the
    trainer averages their gradients itself.
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ignore = list(ignore)
    if ignore:
        # PyTorch's documented workaround (pytorch#43690) for keeping parameters out of DDP's reducer.
        DDP._set_params_and_buffers_to_ignore_for_model(model, ignore)
        named = dict(model.named_parameters())
        broadcast_tensors([named[n] for n in ignore])  # DDP no longer broadcasts them at start
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def average_grads(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of parameters that DDP does not reduce (the aux parameters)."""
    if not _active():
        return
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            all_reduce(p.grad)
            p.grad.div_(world)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and bytes: equal digests mean equal weights."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
