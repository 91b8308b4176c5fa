"""``rdkit compress`` and ``rdkit decompress``: images <-> ``.rdk`` files (API: :mod:`rdkit_ae.codec`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors
from rdkit_ae.commands.outputs import FORCE_HELP, check_outputs
from rdkit_ae.text import fmt

PROGRESS_FROM = 4  # files; fewer finish too fast for a bar to help
DECODED_SUFFIX = ".decoded.png"  # never "<stem>.png": that is usually the original image
LOSSLESS_SUFFIXES = (".png", ".bmp", ".ppm", ".tif", ".tiff")
MAX_PIXELS_HELP = (
    "largest image read, compressed or decoded, in pixels, for trusted files: it replaces the defaults "
    "(images: RDKIT_MAX_IMAGE_PIXELS or 33,554,432; .rdk files: at most 256 pixels per coded byte, "
    "262,144 whatever their size, and 67,108,864 in all)"
)


LAMBDA_HELP = "variable-rate model: compress at this lambda (within its trained range; interpolates between them)"
RATE_HELP = (
    "variable-rate model: compress at this rate index, 0 (lowest rate) .. K-1 (a fraction interpolates); "
    "default: the middle of the range. Files record it: decompress needs no option"
)
TARGET_HELP = {
    "bpp": "variable-rate model: search the rate position per image for this many bits per pixel (whole file)",
    "cr": "variable-rate model: search the rate position per image for this compression ratio (24 / bpp)",
    "max_bytes": "variable-rate model: the largest file up to this many bytes (whole .rdk file; never exceeded)",
    "psnr": "variable-rate model: the smallest file whose decoded image reaches this PSNR (dB)",
}
PASSES_HELP = "rate control: at most this many passes per image (each one compress; --psnr also decodes)"


def _target(model: Path, lmbda, rate, targets: dict, passes: Optional[int]):
    """The one rate-control target asked for (None: none), checked before any work."""
    from rdkit_ae.codec.rate_control import target_of
    from rdkit_ae.errors import RdkitError

    chosen = {k: v for k, v in targets.items() if v is not None}
    if not chosen:
        if passes is not None:
            raise RdkitError("--passes needs a target: --bpp, --cr, --max-bytes or --psnr")
        return None
    names = [f"--{k.replace('_', '-')}" for k in chosen]
    if len(chosen) > 1:
        raise RdkitError(f"give one target, not {' and '.join(names)}")
    if lmbda is not None or rate is not None:
        raise RdkitError(f"use either {names[0]} or {'--lambda' if lmbda is not None else '--rate'}, not both")
    return target_of(**chosen)


def _codec(model: Path, max_pixels: Optional[int], lmbda: Optional[float] = None, rate: Optional[float] = None):
    """The checkpoint's codec at its operating point; an explicit ``--max-pixels`` replaces the bomb bound."""
    from rdkit_ae.codec import Codec
    from rdkit_ae.errors import RdkitError

    if lmbda is not None and rate is not None:
        raise RdkitError("use either --lambda or --rate, not both")
    if max_pixels is None:
        codec = Codec.load(model)
    else:
        codec = Codec.load(model, max_pixels=max(max_pixels, 1), pixels_per_byte=None)
    if lmbda is not None or rate is not None:
        option = "--lambda" if lmbda is not None else "--rate"
        if not codec.model.variable_rate:
            raise RdkitError(f"{option} needs a variable-rate model, but {model} has a single rate")
        try:
            codec.set_rate(lmbda=lmbda, rate=rate)
        except RdkitError as exc:
            raise RdkitError(f"{option}: {exc} ({model})") from None
    return codec


def _plan(
    inputs: List[Path], output: Optional[Path], out_dir: Optional[Path], default_name, model: Path, force: bool
) -> list[tuple[Path, Path]]:
    """Pair every input with its output path; refuse ambiguous or clobbering plans before any work."""
    from rdkit_ae.errors import RdkitError

    if output is not None and out_dir is not None:
        raise RdkitError("use either -o/--output or --out-dir, not both")
    if output is not None and len(inputs) > 1:
        raise RdkitError(f"-o/--output takes one input, got {len(inputs)}; use --out-dir DIR for several")
    for p in inputs:
        if not p.is_file():
            raise RdkitError(f"input not found: {p}" if not p.exists() else f"input is not a file: {p}")
    pairs = []
    for p in inputs:
        if output is not None:
            dst = output
        elif out_dir is not None:
            dst = out_dir / default_name(p).name
        else:
            dst = default_name(p)
        pairs.append((p, dst))
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        key = dst.resolve()
        if key in seen:
            raise RdkitError(f"{seen[key]} and {src} would both be written to {dst}; use -o per file or rename them")
        seen[key] = src
    option = "-o" if output is not None else "the output"
    check_outputs([(option, dst) for _, dst in pairs], [*inputs, model], force=force)
    return pairs


def _consoles():
    from rich.console import Console

    return Console(), Console(stderr=True)


def _progress(console, total: int, label: str):
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if total < PROGRESS_FROM:
        return contextlib.nullcontext(None)
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )


def _run_all(err, pairs, label: str, work) -> list:
    """Run ``work(src, dst)`` over the pairs with a progress bar for many; print notes."""
    reports = []
    with _progress(err, len(pairs), label) as progress:
        task = progress.add_task(label, total=len(pairs)) if progress else None
        for src, dst in pairs:
            report = work(src, dst)
            for note in report.notes:
                (progress.console if progress else err).print(f"note: {src}: {note}", highlight=False, soft_wrap=True)
            reports.append(report)
            if progress:
                progress.advance(task)
    return reports


@app.command()
@handle_errors
def compress(
    images: List[Path] = typer.Argument(..., help="image files (PNG, JPEG, WebP, BMP, TIFF, ...); any size"),
    model: Path = typer.Option(
        ..., "--model", "-m", help="checkpoint (.pt) from `rdkit train`; its recipe rebuilds the model"
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="output file (one input only; default IMAGE with .rdk)"
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="write NAME.rdk for each input into this folder"),
    verify: bool = typer.Option(
        False, "--verify", help="decode each file and check it equals the model's reconstruction bit for bit"
    ),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help=MAX_PIXELS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing but errors"),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    lmbda: Optional[float] = typer.Option(None, "--lambda", help=LAMBDA_HELP),
    rate: Optional[float] = typer.Option(None, "--rate", help=RATE_HELP),
    bpp: Optional[float] = typer.Option(None, "--bpp", help=TARGET_HELP["bpp"]),
    cr: Optional[float] = typer.Option(None, "--cr", help=TARGET_HELP["cr"]),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help=TARGET_HELP["max_bytes"]),
    psnr: Optional[float] = typer.Option(None, "--psnr", help=TARGET_HELP["psnr"]),
    passes: Optional[int] = typer.Option(None, "--passes", help=PASSES_HELP),
) -> None:
    """Compress images to .rdk files; print bytes, bpp, CR and PSNR/SSIM of the reconstruction."""
    from rdkit_ae.codec import compress_file
    from rdkit_ae.codec.container import SUFFIX
    from rdkit_ae.codec.rate_control import DEFAULT_PASSES, rate_span
    from rdkit_ae.codec.target_files import compress_file_to

    targets = {"bpp": bpp, "cr": cr, "max_bytes": max_bytes, "psnr": psnr}
    target = _target(model, lmbda, rate, targets, passes)
    pairs = _plan(images, output, out_dir, lambda p: p.with_suffix(SUFFIX), model, force)
    codec = _codec(model, max_pixels, lmbda, rate)
    if target is not None:
        _check_passes(passes)
        try:
            rate_span(codec)
        except Exception:
            raise _fixed_rate(target.option.split()[0], model) from None

    def work(src, dst):
        if target is None:
            return compress_file(codec, src, dst, verify=verify, max_image_pixels=max_pixels)
        n = DEFAULT_PASSES if passes is None else passes
        return compress_file_to(codec, src, dst, target, max_passes=n, verify=verify, max_image_pixels=max_pixels)

    out, err = _consoles()
    reports = _run_all(err, pairs, "compress", work)
    if quiet:
        return
    if len(reports) == 1:
        r = reports[0]
        check = ", verified" if r.verified else ""
        point = f", {codec.operating_point}" if codec.operating_point else ""
        if target is not None:
            point = f", {r.achieved}"
        out.print(
            f"{r.source} -> {r.output}: {r.width}x{r.height}, {r.nbytes:,} bytes (container {r.header_bytes}), "
            f"{fmt(r.bpp, '.4f')} bpp, CR {fmt(r.cr, '.1f')}, PSNR {fmt(r.psnr)} dB, SSIM {fmt(r.ssim, '.4f')}"
            f"{check}{point}",
            highlight=False,
            soft_wrap=True,
        )
        return
    point = f", {codec.operating_point}" if codec.operating_point and target is None else ""
    point = f", {target.option}" if target is not None else point
    _table(out, reports, f"compressed with {codec.source} (model {codec.id_hex}{point})", quality=True)


def _check_passes(passes: Optional[int]) -> None:
    from rdkit_ae.codec.rate_control import MAX_PASSES
    from rdkit_ae.errors import RdkitError

    if passes is not None and not 2 <= passes <= MAX_PASSES:
        raise RdkitError(f"--passes must be in 2..{MAX_PASSES}, got {passes}")


def _fixed_rate(option: str, model: Path):
    from rdkit_ae.errors import RdkitError

    return RdkitError(f"{option} needs a variable-rate model, but {model} has a single rate")


@app.command()
@handle_errors
def decompress(
    files: List[Path] = typer.Argument(..., help=".rdk files"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="the checkpoint that compressed them"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help=f"output image (one input only; default FILE{DECODED_SUFFIX})"
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="write NAME.png for each input into this folder"),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help=MAX_PIXELS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing but errors"),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    backend: str = typer.Option(
        "torch", "--backend", help="torch (the checkpoint) or onnx (an `rdkit export onnx` folder)"
    ),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="with --backend onnx: the export folder (no checkpoint)"),
) -> None:
    """Decode .rdk files to PNG images (bit-exact: the same file always gives the same pixels)."""
    from rdkit_ae.errors import RdkitError

    if output is not None and output.suffix.lower() not in LOSSLESS_SUFFIXES:
        raise RdkitError(f"-o {output}: write a lossless image ({', '.join(LOSSLESS_SUFFIXES)})")

    def default_name(p: Path) -> Path:
        return p.with_name(p.stem + (".png" if out_dir is not None else DECODED_SUFFIX))

    from rdkit_ae.interop.onnx.cli import backend_source, open_backend

    source = backend_source(backend, model, onnx)
    pairs = _plan(files, output, out_dir, default_name, source, force)
    codec, decompress_file = open_backend(backend, source, max_pixels, _codec)
    out, err = _consoles()
    reports = _run_all(err, pairs, "decompress", lambda src, dst: decompress_file(codec, src, dst))
    if quiet:
        return
    if len(reports) == 1:
        r = reports[0]
        point = "" if r.rate is None else f", rate {r.rate:g}"
        out.print(
            f"{r.source} -> {r.output}: {r.width}x{r.height} from {r.nbytes:,} bytes, "
            f"{fmt(r.bpp, '.4f')} bpp, CR {fmt(r.cr, '.1f')}{point}",
            highlight=False,
            soft_wrap=True,
        )
        return
    _table(out, reports, f"decompressed with {codec.source} (model {codec.id_hex})", quality=False)


def _table(console, reports, title: str, quality: bool) -> None:
    from rich.table import Table

    from rdkit_ae.evaluation.metrics import cr_from_bpp

    columns = ["file", "output", "size", "bytes", "bpp", "CR"] + (["PSNR dB", "SSIM"] if quality else [])
    targeted = all(getattr(r, "rate_report", None) is not None for r in reports)  # rate control: where it landed
    columns += ["rate", "passes"] if targeted else []
    table = Table(title=title)
    for name in columns:  # fold long paths rather than cut them: the names are the point
        table.add_column(name, overflow="fold")
    for r in reports:
        row = [r.source, r.output, f"{r.width}x{r.height}", fmt(r.nbytes, ","), fmt(r.bpp, ".4f"), fmt(r.cr, ".1f")]
        if quality:
            row += [fmt(r.psnr), fmt(r.ssim, ".4f")]
        if targeted:
            row += [f"{r.rate_report.rate:.6g}", str(len(r.rate_report.passes))]
        table.add_row(*row)
    n = len(reports)
    bpp = sum(r.bpp for r in reports) / n
    mean_bytes = sum(r.nbytes for r in reports) / n
    row = ["mean", "", "", fmt(mean_bytes, ",.0f"), fmt(bpp, ".4f"), fmt(cr_from_bpp(bpp), ".1f")]
    if quality:
        psnrs = [r.psnr for r in reports if r.psnr is not None]
        ssims = [r.ssim for r in reports if r.ssim is not None]
        row += [
            fmt(sum(psnrs) / len(psnrs) if psnrs else None),
            fmt(sum(ssims) / len(ssims) if ssims else None, ".4f"),
        ]
    row += ["", ""] if targeted else []
    table.add_row(*row, style="bold")
    console.print(table)
