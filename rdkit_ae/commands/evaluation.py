"""``rdkit eval``: real-bitstream evaluation of checkpoints (``rdkit bench`` is in commands/bench.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors
from rdkit_ae.commands.outputs import FORCE_HELP, check_outputs


def _console():
    from rich.console import Console

    return Console()


def _numbers(option: str, values: List[str]) -> list[float]:
    """Repeated options and comma-separated lists alike: ``--rate 0,1 --rate 2`` -> [0, 1, 2]."""
    import math

    from rdkit_ae.errors import RdkitError

    out = []
    for text in (part.strip() for value in values for part in value.split(",")):
        try:
            number = float(text)
        except ValueError:
            raise RdkitError(f"{option}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise RdkitError(f"{option}: {text!r} is not a finite number")
        out.append(number)
    return out


def operating_points(lambdas: List[str], rates: List[str]) -> Optional[list[tuple[Optional[float], Optional[float]]]]:
    """``(lmbda, rate index)`` per operating point asked for; ``[(None, None)]``: each checkpoint as it is;
    None for ``--rate all``: every point each checkpoint was trained for."""
    from rdkit_ae.errors import RdkitError

    if lambdas and rates:
        raise RdkitError("use either --lambda or --rate, not both")
    if [r.strip().lower() for r in rates] == ["all"]:
        return None
    if lambdas:
        return [(v, None) for v in _numbers("--lambda", lambdas)]
    if rates:
        return [(None, v) for v in _numbers("--rate", rates)]
    return [(None, None)]


def _points_of(checkpoints: List[Path], points, device: str) -> list[list[tuple[Optional[float], Optional[float]]]]:
    """Each checkpoint's points, checked before any evaluation, so no work is lost to a typo (``points`` None:
    each checkpoint's trained points)."""
    from rdkit_ae.checkpoint import load_model
    from rdkit_ae.evaluation.evaluator import check_operating_points, trained_operating_points

    if points == [(None, None)]:
        return [points for _ in checkpoints]
    out = []
    for path in checkpoints:
        model, _, _ = load_model(path, map_location=device)
        chosen = trained_operating_points(model) if points is None else points
        check_operating_points(model, chosen, str(path))
        out.append(chosen)
    return out


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
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", min=1, help="largest image read, in pixels (default: RDKIT_MAX_IMAGE_PIXELS or 32 MP)"
    ),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
    pad: str = typer.Option(
        "replicate",
        "--pad",
        help="replicate: pad right/bottom edges to the model's stride, as `rdkit compress` (default); "
        "compressai: centred zeros to a multiple of 64, as compressai.utils.eval_model",
    ),
    lambdas: List[str] = typer.Option(
        [],
        "--lambda",
        help="variable-rate model: evaluate at these lambdas (repeat the option or separate by commas): one RD "
        "curve from one checkpoint",
    ),
    metrics: Optional[str] = typer.Option(
        None,
        "--metrics",
        help="perceptual metrics to add, comma-separated: haarpsi, ms-gmsd, vsi, mdsi (piq, weight-free), lpips, "
        "dists (need backbone weights); psnr, ssim and ms-ssim are always computed",
    ),
    lpips_weights: Optional[Path] = typer.Option(
        None,
        "--lpips-weights",
        help="torchvision AlexNet/VGG-16 ImageNet weights for lpips (default: RDKIT_LPIPS_BACKBONE, then torch's "
        "hub cache)",
    ),
    dists_weights: Optional[Path] = typer.Option(
        None,
        "--dists-weights",
        help="torchvision VGG-16 ImageNet weights (through conv5_3) for dists (default: RDKIT_DISTS_BACKBONE, then "
        "torch's hub cache)",
    ),
    rates: List[str] = typer.Option(
        [],
        "--rate",
        help="variable-rate model: evaluate at these rate indices 0..K-1 (repeat or comma-separate, e.g. "
        "--rate 0,1,2,3; all: every trained point); default: the quantizer's own point, the middle of its range",
    ),
    bpps: List[str] = typer.Option(
        [],
        "--bpp",
        help="variable-rate model: code every image at exactly these bpp (rate control per image, as rdkit "
        "compress --bpp; repeat or comma-separate)",
    ),
    crs: List[str] = typer.Option([], "--cr", help="as --bpp, as compression ratios (CR 12 = 2.0 bpp)"),
) -> None:
    """Compress images to real bytes with each checkpoint, decompress, and report rate and quality."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rdkit_ae.data.sources import load_images, set_image_pixel_limit
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.evaluation.evaluator import evaluate_operating_points
    from rdkit_ae.evaluation.padding import check_pad
    from rdkit_ae.evaluation.results import results_curve, write_records_csv
    from rdkit_ae.files import write_json

    if split is None:
        split = "val" if data == "cifar10" else "all"
    if split not in ("val", "all"):
        raise RdkitError(f"--split must be val or all, got '{split}'")
    check_outputs([("--out", out), ("--csv", csv)], [*checkpoints, Path(data)], force=force)
    set_image_pixel_limit(max_pixels)  # images are read lazily, one by one, with this limit
    check_pad(pad)
    # --lpips-weights, --dists-weights: for this command only
    with _env_file("RDKIT_LPIPS_BACKBONE", lpips_weights), _env_file("RDKIT_DISTS_BACKBONE", dists_weights):
        chosen_metrics = _check_metrics(metrics, lpips_weights, dists_weights)
        targets = bpp_targets(bpps, crs, lambdas + rates, checkpoints)
        points = operating_points(lambdas, rates)
        per_checkpoint: list[list[tuple[Optional[float], Optional[float]]]] = (
            [[(None, None)] for _ in checkpoints] if targets else _points_of(checkpoints, points, device)
        )
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
            for path, chosen in zip(checkpoints, per_checkpoint):
                task = progress.add_task(f"eval {path.name}", total=len(images) * max(len(chosen), len(targets)))
                advance = lambda n, t=task: progress.advance(t, n)  # noqa: E731
                if targets:
                    results += [(path, r) for r in _at_targets(path, images, targets, pad, chosen_metrics, advance)]
                    continue
                for r in evaluate_operating_points(
                    path,
                    images,
                    chosen,
                    batch_size=batch_size,
                    device=device,
                    check_exact=check,
                    pad=pad,
                    metrics=chosen_metrics,
                    progress=advance,
                ):
                    results.append((path, r))

    _print_results(console, results, f"{images.name} ({split}, {len(images)} images)", pad, points, chosen_metrics)
    if out is not None:
        write_json(out, results_curve([r for _, r in results], name))
        console.print(f"wrote {out}")
    if csv is not None:
        rows = [
            {"checkpoint": str(p), **{k: r.meta[k] for k in ("rate", "lambda") if k in r.meta}, **rec}
            for p, r in results
            for rec in r.records
        ]
        write_records_csv(csv, rows)
        console.print(f"wrote {csv}")


def bpp_targets(bpps: List[str], crs: List[str], points: List[str], checkpoints: List[Path]) -> list[float]:
    """The --bpp/--cr targets in bpp (CR = 24 / bpp), checked before any work: positive, not mixed with
    --lambda/--rate, every checkpoint variable-rate."""
    from rdkit_ae.checkpoint import load_model
    from rdkit_ae.errors import RdkitError

    targets = _numbers("--bpp", bpps) + [24 / v if v > 0 else v for v in _numbers("--cr", crs)]
    if not targets:
        return []
    if points:
        raise RdkitError("use --bpp/--cr or --lambda/--rate, not both")
    if any(v <= 0 for v in targets):
        raise RdkitError("--bpp and --cr must be positive")
    for path in checkpoints:
        model, _, _ = load_model(path, map_location="cpu")
        if not model.variable_rate:
            raise RdkitError(f"--bpp/--cr need a variable-rate model, but {path} has a single rate")
    return targets


def _at_targets(path: Path, images, targets: list[float], pad: str, metrics, progress) -> list:
    from rdkit_ae.bench.targets import evaluate_at_bpp

    out = []
    for bpp in targets:
        r = evaluate_at_bpp(str(path), images, bpp=bpp, pad=pad, metrics=metrics, progress=progress)
        r.meta["checkpoint"] = str(path)
        out.append(r)
    return out


@contextlib.contextmanager
def _env_file(env: str, path: Optional[Path]) -> Iterator[None]:
    """``env`` (a backbone variable the evaluation's lpips/dists reads) set to ``path`` for the duration, then
    restored."""
    import os

    if path is None:
        yield
        return
    before = os.environ.get(env)
    os.environ[env] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = before


def _check_metrics(metrics: Optional[str], lpips_file: Optional[Path], dists_file: Optional[Path]) -> tuple[str, ...]:
    """The --metrics names, checked before any work; lpips, dists: their backbone loaded (one line if not, naming
    the option that gave the file)."""
    from rdkit_ae.evaluation.perceptual import parse_metrics

    chosen = parse_metrics(metrics)
    if "lpips" in chosen:
        from rdkit_ae.evaluation.learned_metrics import load_lpips

        load_lpips(lpips_file)
    if "dists" in chosen:
        from rdkit_ae.evaluation.dists import load_dists

        load_dists(dists_file)
    return chosen


def _perceptual_line(summary, metrics) -> str:
    """``haarpsi 0.9123 (higher is better, 5 images), ...``: the means of the --metrics values."""
    from rdkit_ae.evaluation.perceptual import METRICS
    from rdkit_ae.text import fmt

    parts = []
    for name in metrics:
        m = METRICS[name]
        better = "higher" if m.higher_is_better else "lower"
        n = summary.get(f"{m.key}_images", 0)
        parts.append(f"{name} {fmt(summary.get(m.key), '.4f')} ({better} is better, {n} images)")
    return ", ".join(parts)


def _print_results(console, results, what: str, pad: str, points, metrics=()) -> None:
    """The table of means, then per checkpoint what it was evaluated at and what was checked."""
    from rich import box
    from rich.table import Table

    from rdkit_ae.text import fmt

    has_container = all("container_bpp" in r.summary for _, r in results)
    has_rate = any("rate" in r.meta for _, r in results)
    table = Table(
        title=f"{what}: means over images",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        caption=f"CR = 24 / mean bpp; .rdk = whole container file; PSNR* = PSNR of the mean MSE; padding: {pad}",
    )
    columns = ["#", "recipe"] + (["rate", "lambda"] if has_rate else []) + ["bpp", "CR"]
    columns += ["bpp .rdk"] if has_container else []
    columns += ["PSNR", "PSNR*", "SSIM", "MS-SSIM", *[m.upper() for m in metrics], "enc ms", "dec ms"]
    for col in columns:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for i, (_, r) in enumerate(results, 1):
        s = r.summary
        row = [str(i), r.name]
        if has_rate:
            row += [fmt(r.meta.get("rate"), "g"), fmt(r.meta.get("lambda"), ".4g")]
        row += [fmt(s["bpp"], ".3f"), fmt(s["cr"])]
        if has_container:
            row.append(fmt(s["container_bpp"], ".3f"))
        row += [
            fmt(s["psnr"]),
            fmt(s["psnr_of_mean_mse"]),
            fmt(s["ssim"], ".4f"),
            fmt(s["ms_ssim"], ".4f"),
            *[fmt(s.get(m.replace("-", "_")), ".4f") for m in metrics],
            fmt(1e3 * s["encoding_time"], ".1f"),
            fmt(1e3 * s["decoding_time"], ".1f"),
        ]
        table.add_row(*row)
    console.print(table)
    for i, (path, r) in enumerate(results, 1):
        s = r.summary
        console.print(f"#{i} {path}", highlight=False)
        if "rate" in r.meta:
            default = " (the quantizer's default: --rate/--lambda pick others)" if points == [(None, None)] else ""
            console.print(
                f"   variable rate: rate {r.meta['rate']:g} (lambda {fmt(r.meta.get('lambda'), '.4g')}){default}",
                highlight=False,
            )
        if "target_bpp" in s:
            console.print(
                f"   rate control: every image at {s['target_bpp']:g} bpp (CR {24 / s['target_bpp']:.3g}) of its "
                f"streams, {s['passes']:.1f} passes per image",
                highlight=False,
            )
        if "nominal_bpp" in s:
            console.print(
                f"   fixed rate: nominal CR {s['nominal_cr']:.3f} ({s['nominal_bpp']:.4f} bpp, h*w*k*b) "
                f"vs measured CR {s['cr']:.3f} ({s['bpp']:.4f} bpp)",
                highlight=False,
            )
        if metrics:
            console.print(f"   perceptual: {_perceptual_line(s, metrics)}", highlight=False)
        if r.meta.get("bit_exact_checked"):
            console.print(
                f"   bit-exact: decompress(compress(x)) == forward(x) on all {s['n_images']} images", highlight=False
            )
