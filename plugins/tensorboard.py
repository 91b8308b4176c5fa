"""The ``tensorboard`` training callback: loss curves and reconstructions for TensorBoard (off by default).

``[train] callbacks = [{ name = "tensorboard" }]`` writes event files into
``RUN_DIR/tensorboard`` (``log_dir = "..."`` for another folder; a relative
one is relative to the run folder); view them with
``tensorboard --logdir RUN_DIR/tensorboard``. Needs the ``tensorboard``
package: ``pip install rdkit-ae[tensorboard]``.

``log_dir`` may be absolute, or lead out of the run folder with ``..``
(one folder for the logs of many runs): the events are then written there,
and the training says so when it starts (a recipe is shared, so where it
writes should not be a surprise). A ``log_dir`` that exists and is not a
folder, or cannot be created, stops the training at its start with one line.

Logged (rank 0 only):

- per step, ``step/<term>`` for the total loss, each weighted loss term and
  the aux loss, and ``step/lr``; at the steps where the loop reads losses
  back anyway (every step on a CPU, every 25 on a GPU) so logging adds no
  device sync, or every ``every`` steps when given;
- per epoch, ``epoch/<key>`` for every number of the metrics.jsonl record
  (train and validation losses, PSNR, bpp, lr, throughput), at the step the
  epoch ended;
- per epoch, the image ``reconstruction``: the first ``images`` validation
  patches above the eval model's reconstructions.

A resumed run writes on into the same folder; events after the step it
resumes from (logged by the interrupted run past its last checkpoint) are
dropped by TensorBoard (``purge_step``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid

from rdkit_ae.errors import PluginError
from rdkit_ae.registry import register
from rdkit_ae.text import one_line
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext

LOG_DIR = "tensorboard"
EXTRA = "pip install rdkit-ae[tensorboard]"


def _summary_writer() -> Any:
    # Imported when a recipe names the callback: tensorboard is an optional extra, absent from most installs.
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PluginError(f"callback 'tensorboard' needs the tensorboard package: {EXTRA}") from None
    return SummaryWriter


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, links and ``..`` resolved."""
    return path.resolve().is_relative_to(folder.resolve())


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PluginError(f"callback 'tensorboard': {name} must be an integer >= {low}; got {value!r}")
    return value


@register("callback", "tensorboard")
class TensorBoard(Callback):
    """TensorBoard event files: step and epoch scalars, a reconstruction image per epoch.

    Args:
        log_dir: where to write (default ``RUN_DIR/tensorboard``; relative to the run folder).
        every: log step scalars every N steps (default 0: where the loop syncs anyway).
        images: validation patches in the reconstruction image (default 4; 0: none).
    """

    def __init__(self, log_dir: str | None = None, every: int = 0, images: int = 4):
        if log_dir is not None and (not isinstance(log_dir, str) or not log_dir.strip()):
            raise PluginError(f"callback 'tensorboard': log_dir must be a non-empty string; got {log_dir!r}")
        self.log_dir, self.every, self.images = log_dir, _count("every", every, 0), _count("images", images, 0)
        self.writer_cls = _summary_writer()  # fails now, when the recipe is read, not after the first epoch
        self.writer: Any = None

    def path(self, ctx: TrainContext) -> Path:
        return ctx.out / (self.log_dir or LOG_DIR)

    def on_train_start(self, ctx: TrainContext) -> None:
        if not ctx.info.is_main:
            return
        path = self.path(ctx)
        if path.exists() and not path.is_dir():
            raise PluginError(f"callback 'tensorboard': log_dir {path} exists and is not a folder")
        if not _inside(path, ctx.out) and not ctx.options.quiet:
            print(
                f"note: callback 'tensorboard' writes its event files outside the run folder, in {path}",
                file=sys.stderr,
            )
        # resumed: drop what the interrupted run logged after the checkpoint it resumes from
        purge = ctx.step + 1 if ctx.resumed else None
        try:
            self.writer = self.writer_cls(log_dir=str(path), purge_step=purge)
        except OSError as exc:  # a parent that is a file, no permission, a full disk
            raise PluginError(f"callback 'tensorboard': cannot write to log_dir {path}: {one_line(exc, 200)}") from None

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.writer is None or ctx.losses is None:
            return
        if not (ctx.step % self.every == 0 if self.every else ctx.sync_due):
            return
        for name, value in zip(ctx.term_names, ctx.losses.tolist()):
            self.writer.add_scalar(f"step/{name}", value, ctx.step)
        self.writer.add_scalar("step/lr", ctx.optimizer.param_groups[0]["lr"], ctx.step)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if self.writer is None:
            return
        for key, value in (ctx.record or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, ctx.step)
        if self.images and len(ctx.val_set):
            self.writer.add_image("reconstruction", self.reconstruction(ctx), ctx.step)
        self.writer.flush()

    @torch.no_grad()
    def reconstruction(self, ctx: TrainContext) -> torch.Tensor:
        """(3, H, W) in [0, 1]: the first validation patches above their reconstructions."""
        model = ctx.model_for_eval
        n = min(self.images, len(ctx.val_set))
        x = ctx.val_set.__getitems__(list(range(n)))
        was = model.training
        model.eval()
        try:
            x_hat = model(x.to(ctx.device))["x_hat"].float().clamp(0, 1).cpu()
        finally:
            model.train(was)
        return make_grid(torch.cat([x, x_hat]), nrow=n, padding=2, pad_value=1.0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_interrupt(self, ctx: TrainContext) -> None:
        self.close()

    def on_exception(self, ctx: TrainContext, exc: BaseException) -> None:
        self.close()  # a NaN stop or any failure: the event file is flushed and closed, not left open

    def on_train_end(self, ctx: TrainContext) -> None:
        self.close()
