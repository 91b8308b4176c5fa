"""Does the VGG term pay? MSE against MSE + VGG-16 perceptual at CR 12 (2.0 bpp) and over 1-3 bpp, one command.

Runs the sweep of benchmarks/perceptual_study.toml (cached and resumable,
like ``rdkit bench``): conv-mse and conv-hybrid for the same planned epochs
(``--epochs``; their wall-clock is reported), fast-vr and fast-vr-hybrid for
the same wall-clock budget (``--budget`` minutes, the cosine fitted to it),
on dev.npz 0-2499; then every model on the 500 held-out images 2500-2999 with
real bitstreams: the conv models at their 2.0 bpp, the variable-rate ones at
their 7 trained rates (the RD curve; the CR 12 row reads it at a mean of 2.0
bpp, linear between the two rates around it: per-image rate control to 2.0
bpp fails on images that stay below it at the top rate), WebP (method 6) at
42 qualities from 0 to 88.
Metrics: PSNR, SSIM, HaarPSI, MS-GMSD, VSI, MDSI (MS-SSIM
needs more than 160 pixels a side: it is reported on Kodak only). Then
BD-rate over 1-3 bpp on each metric (fast-vr-hybrid against fast-vr, each
against WebP), and, with ``--kodak``, the two variable-rate checkpoints at
their 7 trained rates on Kodak against WebP (a second held-out set).

Writes ``--results`` (default benchmarks/results/perceptual_study/):
table.md, results.json (numbers, command, machine, budgets). ``--links DIR``
also makes DIR/<model> links to the run folders and DIR/READY listing the
four checkpoints.

    python benchmarks/perceptual_study.py                                   # 5 min per fast-vr, 20 epochs per conv
    python benchmarks/perceptual_study.py --budget 0.3 --epochs 1 --limit 50 --out runs/ps-smoke --no-kodak \\
        --results runs/ps-smoke/results                                     # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perceptual_study_report import (  # noqa: E402
    CONV,
    METRICS,
    VR,
    at_cr12,
    bd_table,
    curve_of,
    kodak_section,
    markdown,
)

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "benchmarks" / "perceptual_study.toml"
KODAK = REPO.parent / "shared" / "data" / "kodak"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=5.0, help="wall-clock minutes per variable-rate model [5]")
    ap.add_argument("--epochs", type=int, default=20, help="planned epochs per conv model [20]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--limit", type=int, default=None, help="held-out images 2500..2500+N only (smoke runs)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "perceptual-study", help="the sweep's folder")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "perceptual_study")
    ap.add_argument("--kodak", type=Path, default=KODAK, help="Kodak folder for the variable-rate models")
    ap.add_argument("--no-kodak", action="store_true")
    ap.add_argument("--links", type=Path, default=None, help="make DIR/<model> links to the runs and DIR/READY")
    return ap.parse_args(argv)


def load(args: argparse.Namespace):
    """The spec with the command line's budgets and image limit."""
    from rdkit_ae.bench import load_spec

    spec = load_spec(SPEC)
    for curve in spec.models:
        for point in curve.points:
            if curve.name in VR:
                point.budget = {"time_budget": args.budget, "fit_schedule": True}
            else:
                point.budget = {"epochs": args.epochs}
    if args.limit is not None:
        start = spec.eval_data.start or 0
        spec.eval_data = dataclasses.replace(spec.eval_data, stop=start + args.limit)
    return spec


def link_runs(result, links: Path) -> None:
    """DIR/<model> -> the model's run folder; DIR/READY: one checkpoint per line, in CONV + VR order."""
    links.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in CONV + VR:
        point = result.curves[name]["points"][0]
        run = Path(point.run_dir)
        run = run if run.is_absolute() else (SPEC.parent / run).resolve()
        link = links / name
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(run, target_is_directory=True)
        ckpt = Path(point.checkpoint)
        ckpt = ckpt if ckpt.is_absolute() else (SPEC.parent / ckpt).resolve()
        lines.append(str(ckpt))
    (links / "READY").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    import torch

    from rdkit_ae.bench.executors import InProcess
    from rdkit_ae.bench.runner import run_sweep
    from rdkit_ae.files import write_json
    from rdkit_ae.machine import machine_info, machine_summary

    torch.set_num_threads(args.threads)
    spec = load(args)
    t0 = time.perf_counter()
    result = run_sweep(spec, args.out, executor=InProcess(threads=args.threads))
    if result.failures or result.left:
        print("failed or not run: " + "; ".join(result.failures + result.left), file=sys.stderr)
        return 1
    curves = {name: curve_of(entry["points"]) for name, entry in result.curves.items()}
    train = {
        name: {
            "seconds": result.curves[name]["points"][0].train_seconds,
            "steps": result.curves[name]["points"][0].steps,
            "budget": spec.models[[m.name for m in spec.models].index(name)].points[0].budget,
            "checkpoint": result.curves[name]["points"][0].checkpoint,
        }
        for name in CONV + VR
    }
    cr12 = {name: at_cr12(name, curves[name], interpolate=name in VR) for name in [*CONV, *VR, "WebP"]}
    bd = bd_table(curves, window=spec.bd_window or (1.0, 3.0))
    kodak = None
    if not args.no_kodak and args.kodak.is_dir():
        ckpts = {n: Path(train[n]["checkpoint"]) for n in VR}
        ckpts = {n: c if c.is_absolute() else (SPEC.parent / c).resolve() for n, c in ckpts.items()}
        kodak = kodak_section(ckpts, args.kodak, window=(1.0, 3.0))
    command = "python benchmarks/perceptual_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = {
        "command": command.strip(),
        "data": {"train": "dev.npz images 0-2499 (10% of them validation)", "eval": spec.eval_data.describe()},
        "machine": machine_info(),
        "machine_summary": machine_summary(threads=args.threads),
        "threads": args.threads,
        "metrics": list(METRICS),
        "train": train,
        "cr12": cr12,
        "bd": bd,
        "kodak": kodak,
        "curves": curves,
        "minutes": (time.perf_counter() - t0) / 60,
        "vgg": {k: os.environ.get(k) or spec.env.get(k) for k in ("RDKIT_VGG_WEIGHTS", "RDKIT_VGG_PREPROCESSING")},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    text = markdown(info, n_images=curves["WebP"][0]["n_images"])
    (args.results / "table.md").write_text(text, encoding="utf-8")
    write_json(args.results / "results.json", info)
    if args.links is not None:
        link_runs(result, args.links)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
