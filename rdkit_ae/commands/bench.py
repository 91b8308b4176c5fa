"""``rdkit bench``: train and evaluate a sweep of recipes beside classical codecs (see rdkit_ae.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from rdkit_ae.commands.app import app, handle_errors


class RichReporter:
    """Sweep progress (a rdkit_ae.bench Reporter): one bar over the whole sweep, ETA from step costs, and the step."""

    def __init__(self, console: Any):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def begin(self, tasks: Sequence[Any]) -> None:
        self.n, self.i, self.done = len(tasks), 0, 0.0
        self.total = sum(t.weight for t in tasks) or 1.0
        self.overall = self.progress.add_task(f"sweep ({self.n} steps)", total=self.total)
        self.current = self.progress.add_task("", total=1.0)

    def start(self, task: Any) -> None:
        from rdkit_ae.text import escape

        self.i += 1
        self.progress.update(self.current, description=escape(f"[{self.i}/{self.n}] {task.label}"), completed=0)

    def advance(self, task: Any, fraction: float) -> None:
        self.progress.update(self.current, completed=fraction)
        self.progress.update(self.overall, completed=self.done + fraction * task.weight)

    def finish(self, task: Any, cached: bool) -> None:
        from rdkit_ae.text import escape

        if cached:
            # A cached step costs nothing: drop it from the total rather than
            # count it as done, so it does not make the ETA optimistic.
            self.total -= task.weight
            self.progress.update(self.overall, total=max(self.total, 1e-9))
        else:
            self.done += task.weight
        self.progress.update(self.overall, completed=self.done)
        if task.kind in ("train", "eval"):
            self.console.print(f"  {'cached' if cached else 'done  '} {escape(task.label)}", highlight=False)

    def note(self, message: str) -> None:
        from rdkit_ae.text import escape

        self.console.print(f"[yellow]{escape(message)}[/]", highlight=False)


def _bd_cells(name: str, bd: dict[str, Any]) -> tuple[str, str]:
    """(BD-rate, BD-PSNR) cells of the summary table."""
    if name == bd["anchor"]:
        return "anchor", ""
    r = bd["curves"].get(name)
    rate = "n/a" if r is None or r["bd_rate"] is None else f"{r['bd_rate']:+.1f}%"
    psnr = "n/a" if r is None or r["bd_psnr"] is None else f"{r['bd_psnr']:+.2f}"
    return rate, psnr


def _summary(console: Any, result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"BD vs {result.bd['anchor']} (PSNR; over each overlap)")
    for col in ("curve", "points", "bpp", "PSNR dB", "BD-rate", "BD-PSNR dB"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    for name, curve in result.curves.items():
        pts = curve["points"]
        if pts:
            bpps, psnrs = [p.summary["bpp"] for p in pts], [p.summary["psnr"] for p in pts]
            table.add_row(
                name,
                str(len(pts)),
                f"{min(bpps):.3f}-{max(bpps):.3f}",
                f"{min(psnrs):.2f}-{max(psnrs):.2f}",
                *_bd_cells(name, result.bd),
            )
    console.print(table)
    console.print(
        f"trained {result.trained} point(s) this run; reports in {result.out_dir}: "
        + ", ".join(sorted(p.name for p in result.files.values()))
    )


@app.command()
@handle_errors
def bench(
    spec: Path = typer.Argument(..., help="sweep spec (TOML), e.g. benchmarks/smoke.toml"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: runs/bench-<spec name>)"),
    resume: bool = typer.Option(True, "--resume/--fresh", help="reuse finished points in OUT, or retrain everything"),
) -> None:
    """Train and evaluate a sweep of recipes, run JPEG/WebP/AVIF, and write RD curves and BD-rates."""
    from rich.console import Console

    from rdkit_ae.bench import load_spec, run_sweep
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.text import escape
    from rdkit_ae.training import TrainingInterrupted

    sweep = load_spec(spec)
    out = out or Path("runs") / f"bench-{sweep.name}"
    console = Console()
    console.print(
        f"sweep '{escape(sweep.name)}': {len(sweep.points)} model point(s) in {len(sweep.models)} curve(s), "
        f"{sum(len(c.qualities) for c in sweep.codecs)} codec point(s); eval on {escape(sweep.eval_data.describe())}; "
        f"output {escape(out)}"
    )
    try:
        with RichReporter(console) as reporter:
            result = run_sweep(sweep, out, resume=resume, reporter=reporter)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        console.print(
            f"[red]interrupted[/]: finished points are kept in {escape(out)}; run the same command again to resume"
        )
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    _summary(console, result)
    if result.failures:
        for failure in result.failures:
            console.print(f"[red]FAILED[/] {escape(failure)}", highlight=False)
        raise RdkitError(
            f"{len(result.failures)} point(s) failed to train (left out of the reports; rerun to retry them)"
        )
