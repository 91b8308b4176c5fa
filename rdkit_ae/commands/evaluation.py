"""``rdkit eval`` and ``rdkit bench``: real-bitstream evaluation and RD sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors


def _console():
    from rich.console import Console

    return Console()


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


@app.command("eval")
@handle_errors
def eval_(
    checkpoints: List[Path] = typer.Argument(..., help="checkpoint(s) from `rdkit train`; several make one RD curve"),
    data: str = typer.Option(
        ..., "--data", help="cifar10, a .npz (uint8 x (N,H,W,3)), an image folder or an image file"
    ),
    split: Optional[str] = typer.Option(
        None, help="val or all (default: val for cifar10, i.e. its test set; all otherwise)"
    ),
    val_fraction: float = typer.Option(0.1, help="share of a .npz/folder held out as val (as in training)"),
    seed: int = typer.Option(0, help="seed of the val split (as in training)"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N images of the split"),
    batch_size: int = typer.Option(64, help="images of one small size coded per batch"),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="write CompressAI-style results JSON (one point per checkpoint)"
    ),
    csv: Optional[Path] = typer.Option(None, "--csv", help="write per-image metrics CSV"),
    name: Optional[str] = typer.Option(None, help="curve name in the JSON (default: the recipe name)"),
    check: bool = typer.Option(True, "--check/--no-check", help="verify decode(encode(x)) == forward(x) bit for bit"),
) -> None:
    """Compress images to real bytes with each checkpoint, decompress, and report rate and quality."""
    from rich import box
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from rdkit_ae.data.sources import load_images
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.evaluation.evaluator import evaluate_checkpoint, results_curve, write_records_csv
    from rdkit_ae.files import write_json

    if split is None:
        split = "val" if data == "cifar10" else "all"
    if split not in ("val", "all"):
        raise RdkitError(f"--split must be val or all, got '{split}'")
    images = load_images(data, split, val_fraction=val_fraction, seed=seed, limit=limit)
    console = _console()
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        for path in checkpoints:
            task = progress.add_task(f"eval {path.name}", total=len(images))
            results.append(
                evaluate_checkpoint(
                    path,
                    images,
                    batch_size=batch_size,
                    device=device,
                    check_exact=check,
                    progress=lambda n, t=task: progress.advance(t, n),
                )
            )

    has_container = all("container_bpp" in r.summary for r in results)
    table = Table(
        title=f"{images.name} ({split}, {len(images)} images): means over images",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        caption="CR = 24 / mean bpp; .rdk = whole container file; PSNR* = PSNR of the mean MSE",
    )
    columns = ["#", "recipe", "bpp", "CR"] + (["bpp .rdk"] if has_container else [])
    columns += ["PSNR", "PSNR*", "SSIM", "MS-SSIM", "enc ms", "dec ms"]
    for col in columns:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for i, r in enumerate(results, 1):
        s = r.summary
        row = [str(i), r.name, _fmt(s["bpp"], ".3f"), _fmt(s["cr"])]
        if has_container:
            row.append(_fmt(s["container_bpp"], ".3f"))
        row += [
            _fmt(s["psnr"]),
            _fmt(s["psnr_of_mean_mse"]),
            _fmt(s["ssim"], ".4f"),
            _fmt(s["ms_ssim"], ".4f"),
            _fmt(1e3 * s["encoding_time"], ".1f"),
            _fmt(1e3 * s["decoding_time"], ".1f"),
        ]
        table.add_row(*row)
    console.print(table)
    for i, (path, r) in enumerate(zip(checkpoints, results), 1):
        s = r.summary
        console.print(f"#{i} {path}", highlight=False)
        if "nominal_bpp" in s:
            console.print(
                f"   fixed rate: nominal CR {s['nominal_cr']:.3f} ({s['nominal_bpp']:.4f} bpp, h*w*k*b) "
                f"vs measured CR {s['cr']:.3f} ({s['bpp']:.4f} bpp)",
                highlight=False,
            )
        if r.meta.get("bit_exact_checked"):
            console.print(
                f"   bit-exact: decompress(compress(x)) == forward(x) on all {s['n_images']} images", highlight=False
            )
    if out is not None:
        write_json(out, results_curve(results, name))
        console.print(f"wrote {out}")
    if csv is not None:
        rows = [{"checkpoint": str(p), **rec} for p, r in zip(checkpoints, results) for rec in r.records]
        write_records_csv(csv, rows)
        console.print(f"wrote {csv}")


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)  # labels hold "[...]", which rich would take for markup


class _RichReporter:
    """Sweep progress: one bar over the whole sweep (ETA from estimated step costs) and the current step."""

    def __init__(self, console):
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

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def begin(self, tasks):
        self.n, self.i, self.done = len(tasks), 0, 0.0
        self.total = sum(t.weight for t in tasks) or 1.0
        self.overall = self.progress.add_task(f"sweep ({self.n} steps)", total=self.total)
        self.current = self.progress.add_task("", total=1.0)

    def start(self, task):
        self.i += 1
        self.progress.update(self.current, description=escape(f"[{self.i}/{self.n}] {task.label}"), completed=0)

    def advance(self, task, fraction):
        self.progress.update(self.current, completed=fraction)
        self.progress.update(self.overall, completed=self.done + fraction * task.weight)

    def finish(self, task, cached):
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

    def note(self, message):
        self.console.print(f"[yellow]{escape(message)}[/]", highlight=False)


@app.command()
@handle_errors
def bench(
    spec: Path = typer.Argument(..., help="sweep spec (TOML), e.g. benchmarks/smoke.toml"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: runs/bench-<spec name>)"),
    resume: bool = typer.Option(True, "--resume/--fresh", help="reuse finished points in OUT, or retrain everything"),
) -> None:
    """Train and evaluate a sweep of recipes, run JPEG/WebP/AVIF, and write RD curves and BD-rates."""
    from rich.table import Table

    from rdkit_ae.bench.sweep import load_spec, run_sweep
    from rdkit_ae.errors import RdkitError

    sweep = load_spec(spec)
    out = out or Path("runs") / f"bench-{sweep.name}"
    console = _console()
    console.print(
        f"sweep '{sweep.name}': {len(sweep.points)} model point(s) in {len(sweep.models)} curve(s), "
        f"{sum(len(c.qualities) for c in sweep.codecs)} codec point(s); eval on {sweep.eval_data.describe()}; "
        f"output {out}"
    )
    try:
        from rdkit_ae.training.trainer import TrainingInterrupted
    except ImportError:  # training not installed: a classical-only sweep still runs
        TrainingInterrupted = KeyboardInterrupt
    try:
        with _RichReporter(console) as reporter:
            result = run_sweep(sweep, out, resume=resume, reporter=reporter)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        console.print(f"[red]interrupted[/]: finished points are kept in {out}; run the same command again to resume")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    table = Table(title=f"BD vs {result.bd['anchor']} (PSNR; over each overlap)")
    for col in ("curve", "points", "bpp", "PSNR dB", "BD-rate", "BD-PSNR dB"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    for name, curve in result.curves.items():
        pts = curve["points"]
        if not pts:
            continue
        bd = result.bd["curves"].get(name)
        rate = (
            "anchor"
            if name == result.bd["anchor"]
            else ("n/a" if bd is None or bd["bd_rate"] is None else f"{bd['bd_rate']:+.1f}%")
        )
        dpsnr = (
            ""
            if name == result.bd["anchor"]
            else ("n/a" if bd is None or bd["bd_psnr"] is None else f"{bd['bd_psnr']:+.2f}")
        )
        bpps, psnrs = [p.summary["bpp"] for p in pts], [p.summary["psnr"] for p in pts]
        table.add_row(
            name, str(len(pts)), f"{min(bpps):.3f}-{max(bpps):.3f}", f"{min(psnrs):.2f}-{max(psnrs):.2f}", rate, dpsnr
        )
    console.print(table)
    console.print(
        f"trained {result.trained} point(s) this run; reports in {result.out_dir}: "
        + ", ".join(sorted(p.name for p in result.files.values()))
    )
    if result.failures:
        for failure in result.failures:
            console.print(f"[red]FAILED[/] {escape(failure)}", highlight=False)
        raise RdkitError(
            f"{len(result.failures)} point(s) failed to train (left out of the reports; rerun to retry them)"
        )
