"""``rdkit bench``: train and evaluate a sweep of recipes beside classical codecs (see rdkit_ae.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from rdkit_ae.commands.app import app, handle_errors


class RichReporter:
    """Sweep progress (a rdkit_ae.bench Reporter): a bar over the sweep (ETA from step costs), one per running job."""

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
        self.running: dict[int, tuple[Any, Any, float]] = {}  # id(task) -> (task, bar, fraction done)

    def start(self, task: Any) -> None:
        from rdkit_ae.text import escape

        self.i += 1
        bar = self.progress.add_task(escape(f"[{self.i}/{self.n}] {task.label}"), total=1.0)
        self.running[id(task)] = (task, bar, 0.0)
        self._overall()

    def _overall(self) -> None:
        partly = sum(f * t.weight for t, _, f in self.running.values())
        self.progress.update(self.overall, completed=self.done + partly)

    def advance(self, task: Any, fraction: float) -> None:
        if id(task) in self.running:
            _, bar, _ = self.running[id(task)]
            self.running[id(task)] = (task, bar, fraction)
            self.progress.update(bar, completed=fraction)
            self._overall()

    def finish(self, task: Any, cached: bool) -> None:
        from rdkit_ae.text import escape

        if id(task) in self.running:
            self.progress.remove_task(self.running.pop(id(task))[1])
        if cached:
            # A cached step costs nothing: drop it from the total rather than
            # count it as done, so it does not make the ETA optimistic.
            self.total -= task.weight
            self.progress.update(self.overall, total=max(self.total, 1e-9))
        else:
            self.done += task.weight
        self._overall()
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
    delta = None if r is None else r.get("bd_psnr", r.get("bd_quality"))  # bd_quality: a spec's other bd_metric
    psnr = "n/a" if delta is None else (f"{delta:+.2f}" if "bd_psnr" in r else f"{delta:+.4f}")
    return rate, psnr


def _summary(console: Any, result: Any) -> None:
    from rich.table import Table

    window = result.bd.get("window")
    over = f"over {window[0]:g}-{window[1]:g} bpp" if window else "over each overlap"
    metric = result.bd.get("metric", "psnr-rgb")
    label = "PSNR" if metric == "psnr-rgb" else metric
    table = Table(title=f"BD vs {result.bd['anchor']} ({label}; {over})")
    for col in ("curve", "points", "bpp", "PSNR dB", "BD-rate", "BD-PSNR dB" if label == "PSNR" else f"BD-{label}"):
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


def _executor(sweep: Any, jobs: int | None, threads: int | None, kind: str | None, address: str | None) -> Any:
    """The executor the options (or the spec's [parallel] table) ask for."""
    from rdkit_ae.bench.executors import InProcess
    from rdkit_ae.bench.local_executor import LocalProcesses
    from rdkit_ae.errors import RdkitError

    given = sweep.parallel
    kind = kind or ("ray" if address else given.get("executor", "local"))
    jobs, threads = jobs or given.get("jobs"), threads or given.get("threads_per_job")
    if kind == "ray":
        try:
            from rdkit_ae.bench.ray_executor import RayCluster
        except ImportError:
            raise RdkitError("--executor ray needs Ray: pip install 'rdkit-ae[ray]'") from None
        return RayCluster(address or given.get("address"), threads or 1, jobs)
    if kind != "local":
        raise RdkitError(f"--executor must be local or ray, got {kind!r}")
    if address:
        raise RdkitError("--address is for --executor ray")
    return LocalProcesses(jobs, threads) if jobs and jobs > 1 else InProcess(threads)


def _left(console: Any, result: Any) -> None:
    from rdkit_ae.text import escape

    if result.left:
        console.print(
            f"[yellow]the sweep's time budget ran out before {len(result.left)} step(s) started[/]: "
            f"{escape(', '.join(result.left))}; run the same command again to do them",
            highlight=False,
        )


@app.command()
@handle_errors
def bench(
    spec: Path = typer.Argument(..., help="sweep spec (TOML), e.g. benchmarks/smoke.toml"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: runs/bench-<spec name>)"),
    resume: bool = typer.Option(True, "--resume/--fresh", help="reuse finished points in OUT, or retrain everything"),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1, help="points run at once as separate processes (default 1: in this process)"
    ),
    threads: Optional[int] = typer.Option(
        None,
        "--threads-per-job",
        "--num-cpus",
        min=1,
        max=1024,  # as [parallel] threads_per_job: 2**31 overflowed torch with a traceback
        help="threads of each job (default: cores // jobs); with Ray, each task's num_cpus (default 1)",
    ),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray"),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to use (e.g. auto, HOST:6379, ray://HOST:10001; default: start one here)"
    ),
    time_budget: Optional[float] = typer.Option(
        None, "--time-budget", help="minutes for the whole sweep: no job starts later (the rest waits for a rerun)"
    ),
) -> None:
    """Train and evaluate a sweep of recipes, run JPEG/WebP/AVIF, and write RD curves and BD-rates."""
    from rich.console import Console

    from rdkit_ae.bench import load_spec, run_sweep
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.text import escape
    from rdkit_ae.training import TrainingInterrupted

    sweep = load_spec(spec)
    out = out or Path("runs") / f"bench-{sweep.name}"
    runner = _executor(sweep, jobs, threads, executor, address)
    console = Console()
    console.print(
        f"sweep '{escape(sweep.name)}': {len(sweep.points)} model point(s) in {len(sweep.models)} curve(s), "
        f"{sum(len(c.qualities) for c in sweep.codecs)} codec point(s); eval on {escape(sweep.eval_data.describe())}; "
        f"output {escape(out)}; {escape(runner.describe())}"
    )
    try:
        with RichReporter(console) as reporter:
            result = run_sweep(sweep, out, resume=resume, reporter=reporter, executor=runner, time_budget=time_budget)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        console.print(
            f"[red]interrupted[/]: finished points are kept in {escape(out)}; run the same command again to resume"
        )
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    _summary(console, result)
    _left(console, result)
    if result.failures:
        for failure in result.failures:
            console.print(f"[red]FAILED[/] {escape(failure)}", highlight=False)
        raise RdkitError(f"{len(result.failures)} point(s) failed (left out of the reports; rerun to retry them)")
