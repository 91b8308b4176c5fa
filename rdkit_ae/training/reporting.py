"""What a training run tells the user: a Reporter protocol, the console reporter and a silent one."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch import Tensor

from rdkit_ae.data.datasets import describe
from rdkit_ae.text import escape
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.results import TrainResult


class EpochProgress(Protocol):
    def advance(self, done: int, acc: Tensor, images: int, t0: float) -> None: ...
    def close(self) -> None: ...


class Reporter(Protocol):
    """The loop's only way to talk to the user (rank 0; other ranks get a :class:`SilentReporter`)."""

    def say(self, text: str) -> None: ...  # rich markup allowed; escape user text
    def note(self, text: str) -> None: ...  # plain text: something differs from what the user may expect
    def header(self, ctx: TrainContext) -> None: ...
    def epoch_progress(self, ctx: TrainContext) -> EpochProgress: ...
    def epoch(self, ctx: TrainContext, record: dict[str, Any]) -> None: ...
    def summary(self, ctx: TrainContext, result: TrainResult) -> None: ...


class _NoProgress:
    def advance(self, done: int, acc: Tensor, images: int, t0: float) -> None:
        pass

    def close(self) -> None:
        pass


class SilentReporter:
    """Says nothing (``quiet``, and every rank but 0 under torchrun)."""

    def say(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def header(self, ctx: TrainContext) -> None:
        pass

    def epoch_progress(self, ctx: TrainContext) -> EpochProgress:
        return _NoProgress()

    def epoch(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        pass

    def summary(self, ctx: TrainContext, result: TrainResult) -> None:
        pass


class ConsoleReporter:
    """A header, a progress bar per epoch (log lines when not on a terminal), a line per epoch, a summary table."""

    def __init__(self, console: Console | None = None):
        self.console = console if console is not None else Console(highlight=False)

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)

    def note(self, text: str) -> None:
        self.say(f"[yellow]note: {escape(text)}[/]")

    def header(self, ctx: TrainContext) -> None:
        info, p = ctx.info, ctx.position
        resuming = f"; resuming at epoch {p.epoch + 1}" + (f", batch {p.batch + 1}" if p.batch else "")
        self.say(
            f"[bold]{ctx.recipe.name}[/] on {ctx.device}{f' x {info.world_size} processes' if info.enabled else ''}, "
            f"{ctx.config.threads} thread(s); train {escape(describe(ctx.train_set))}; val {len(ctx.val_set)} images; "
            f"{ctx.plan_epochs} epochs of {ctx.steps_per_epoch} steps (batch {ctx.recipe.train['batch_size']}"
            f"{' per process' if info.enabled else ''}); run folder {escape(ctx.out)}"
            + (resuming if ctx.resumed else "")
        )

    def epoch_progress(self, ctx: TrainContext) -> EpochProgress:
        label = f"epoch {ctx.epoch + 1}/{ctx.plan_epochs}"
        return EpochView(self.console, label, ctx.steps_per_epoch, ctx.position.batch)

    def epoch(self, ctx: TrainContext, rec: dict[str, Any]) -> None:
        terms = ", ".join(f"{n} {rec[f'train_{n}']:.4g}" for n in ctx.term_names[1:])
        ssim_s = f"  SSIM {rec['val_ssim']:.4f}" if rec.get("val_ssim") is not None else ""
        ips = f"{rec['images_per_s']:,.0f} img/s" if rec.get("images_per_s") else ""
        label = f"epoch {rec['epoch']}/{ctx.plan_epochs}" + (" (partial)" if rec["partial"] else "")
        self.say(
            f"{label}  loss {rec['train_loss']:.4g}"
            + (f" ({terms})" if terms else "")
            + f"  val {rec['val_loss']:.4g}  PSNR {rec['val_psnr']:.2f} dB{ssim_s}  bpp {rec['val_bpp']:.3f} (est.)"
            + f"  lr {rec['lr']:.3g}  {ips}  {rec['epoch_time_s']:.1f} s"
        )

    def summary(self, ctx: TrainContext, result: TrainResult) -> None:
        p = ctx.position
        last = result.metrics[-1] if result.metrics else {}
        table = Table(title=f"{ctx.recipe.name}: {result.stopped}", show_header=False)
        table.add_column("what")
        table.add_column("value")
        table.add_row("epochs / steps", f"{result.epochs} / {result.steps}")
        known = p.best_loss is not None and p.best_epoch is not None
        table.add_row("best val loss", f"{p.best_loss:.5g} (epoch {p.best_epoch:.4g})" if known else "-")
        if last:
            ssim_s = f", SSIM {last['val_ssim']:.4f}" if last.get("val_ssim") is not None else ""
            table.add_row(
                "last validation", f"PSNR {last['val_psnr']:.2f} dB{ssim_s}, {last['val_bpp']:.3f} bpp (estimated)"
            )
            table.add_row(
                "training speed", f"{last['images_per_s']:,.0f} images/s" if last.get("images_per_s") else "-"
            )
        if result.eval is not None:
            s = result.eval["summary"]
            ssim_s = f", SSIM {s['ssim']:.4f}" if s.get("ssim") is not None else ""
            table.add_row(
                "real bitstreams (best.pt)", f"{s['bpp']:.3f} bpp (CR {s['cr']:.1f}), PSNR {s['psnr']:.2f} dB{ssim_s}"
            )
        table.add_row("run folder", escape(ctx.out))
        self.console.print(table)


class EpochView:
    """Progress of one epoch: a rich bar (loss, images/s, ETA) on a terminal, a line every 30 s in a log.

    Reading the loss syncs with the device, so it is refreshed at most twice a second.
    """

    LOG_EVERY = 30.0

    def __init__(self, console: Console, label: str, total: int, done: int):
        self.console, self.label, self.total, self.start_done = console, label, total, done
        self.last = 0.0
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[ips]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("train", total=total, completed=done, loss="-", ips="-")
            self.bar.start()
        else:
            self.last = time.perf_counter()  # first log line after LOG_EVERY seconds

    def advance(self, done: int, acc: Tensor, images: int, t0: float) -> None:
        now = time.perf_counter()
        due = now - self.last > (0.5 if self.bar is not None else self.LOG_EVERY)
        if self.bar is not None and not due:
            self.bar.update(self.task, advance=1)
            return
        if not due:
            return
        self.last = now
        loss = f"{acc[0].item() / max(1, done):.4g}"
        rate = images / max(1e-9, now - t0)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, ips=f"{rate:,.0f}")
            return
        steps_per_s = (done - self.start_done) / max(1e-9, now - t0)
        eta = (self.total - done) / steps_per_s if steps_per_s > 0 else float("nan")
        self.console.print(
            f"  {self.label}: {done}/{self.total} steps, loss {loss}, {rate:,.0f} img/s, "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '?'}",
            soft_wrap=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
