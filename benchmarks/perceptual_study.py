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
from typing import Any

from rdkit_ae.evaluation.bdrate import bjontegaard, psnr_at
from rdkit_ae.evaluation.perceptual import BY_KEY

# -- the numbers and table: CR 12 rows, BD-rate on each metric, the Kodak check (curves: points by bpp) --
CONV = ("conv-mse", "conv-hybrid")
VR = ("fast-vr", "fast-vr-hybrid")
METRICS = ("psnr", "ssim", "haarpsi", "ms_gmsd", "vsi", "mdsi")  # summary keys; MS-SSIM is n/a at 32x32
KODAK_METRICS = ("psnr", "ms_ssim", "haarpsi", "ms_gmsd", "vsi", "mdsi")
PAIRS = (("fast-vr-hybrid", "fast-vr"), ("fast-vr", "WebP"), ("fast-vr-hybrid", "WebP"))
LABEL = {"psnr": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "haarpsi": "HaarPSI", "ms_gmsd": "MS-GMSD"}
LABEL.update(vsi="VSI", mdsi="MDSI")
CR12_BPP = 2.0


def arrow(key: str) -> str:
    return "↑" if BY_KEY[key].higher_is_better else "↓"


def curve_of(points, bpp_key: str = "bpp") -> list[dict[str, Any]]:
    """A bench curve's PointResults (or EvalResults) as plain points, by bpp."""
    out = []
    for p in points:
        s = p.summary
        label = getattr(p, "label", "") or str(s.get("quality", ""))
        row = {"label": label, "bpp": float(s[bpp_key]), "n_images": s.get("n_images")}
        row.update({k: s[k] for k in (*METRICS, "ms_ssim") if s.get(k) is not None})
        out.append(row)
    return sorted(out, key=lambda r: r["bpp"])


def at_cr12(name: str, curve: list[dict[str, Any]], interpolate: bool = False) -> dict[str, Any]:
    """The point closest to 2.0 bpp (the conv models' only one, WebP's closest quality), or with ``interpolate``
    every metric read at 2.0 bpp, linear between the two points around it (a variable-rate model's rates)."""
    if not interpolate:
        return dict(min(curve, key=lambda p: abs(p["bpp"] - CR12_BPP)), curve=name)
    rates = [p["bpp"] for p in curve]
    row: dict[str, Any] = {"curve": name, "bpp": CR12_BPP, "label": "interpolated"}
    for k in METRICS:
        if all(k in p for p in curve):
            row[k] = psnr_at(rates, [p[k] for p in curve], CR12_BPP)
    return row


def bd(anchor: list[dict], test: list[dict], key: str, window: tuple[float, float]) -> dict[str, Any]:
    """BD-rate (%) of ``test`` against ``anchor`` on one metric; lower-is-better metrics negated for the fit."""
    sign = 1.0 if BY_KEY[key].higher_is_better else -1.0
    a = [(p["bpp"], sign * p[key]) for p in anchor if key in p]
    t = [(p["bpp"], sign * p[key]) for p in test if key in p]
    r = bjontegaard([b for b, _ in a], [q for _, q in a], [b for b, _ in t], [q for _, q in t], window=window)
    quality = None if r.bd_psnr is None else sign * r.bd_psnr  # in the metric's own units, test minus anchor
    return {"bd_rate": r.bd_rate, "bd_quality": quality, "method": r.method, "notes": r.notes}


def bd_table(curves: dict[str, list[dict]], window: tuple[float, float], metrics=METRICS) -> dict[str, Any]:
    return {
        f"{test} vs {anchor}": {k: bd(curves[anchor], curves[test], k, window) for k in metrics}
        for test, anchor in PAIRS
        if test in curves and anchor in curves
    }


def kodak_section(ckpts: dict[str, Path], folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    """The variable-rate checkpoints at their trained rates and WebP (qualities 0-100, step 5) on Kodak."""
    from rdkit_ae.data.sources import load_images
    from rdkit_ae.evaluation import classic, evaluate_operating_points

    images = load_images(str(folder), download=False)
    extra = ("haarpsi", "ms-gmsd", "vsi", "mdsi")
    webp = [classic.evaluate_codec(images, "webp", q, options={"method": 6}, metrics=extra) for q in range(0, 101, 5)]
    curves = {"WebP": curve_of(webp)}
    for name, ckpt in ckpts.items():
        points = evaluate_operating_points(ckpt, images, batch_size=1, check_exact=False, metrics=extra)
        curves[name] = curve_of(points, bpp_key="container_bpp")  # whole .rdk files, as WebP's whole files
    return {
        "images": f"{folder.name} ({len(images)} images)",
        "curves": curves,
        "bd": bd_table(curves, window, KODAK_METRICS),
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _metric_fmt(key: str) -> str:
    return ".2f" if key == "psnr" else ".4f"


def cr12_rows(info: dict[str, Any]) -> list[str]:
    head = "| model | training | bpp | " + " | ".join(f"{LABEL[k]} {arrow(k)}" for k in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for name in [*CONV, *VR, "WebP"]:
        p = info["cr12"][name]
        t = info["train"].get(name)
        if t is None:
            train = f"quality {p['label']}"
        else:
            ms = 1e3 * t["seconds"] / max(t["steps"] or 1, 1)
            train = f"{t['seconds'] / 60:.1f} min, {t['steps']} steps, {ms:.0f} ms/step"
        vals = " | ".join(_fmt(p.get(k), _metric_fmt(k)) for k in METRICS)
        lines.append(f"| {name} | {train} | {p['bpp']:.3f} | {vals} |")
    return lines


def bd_rows(bd_by_pair: dict[str, Any], metrics) -> list[str]:
    lines = ["| BD-rate, 1-3 bpp | " + " | ".join(LABEL[k] for k in metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    for pair, row in bd_by_pair.items():
        lines.append(f"| {pair} | " + " | ".join(_fmt(row[k]["bd_rate"], "+.1f") + "%" for k in metrics) + " |")
    return lines


def markdown(info: dict[str, Any], n_images: int) -> str:
    budget = info["train"]["fast-vr"]["budget"]
    epochs = info["train"]["conv-mse"]["budget"]
    lines = [
        "# Does the VGG term pay? (CR 12)",
        "",
        f"Held-out: {info['data']['eval']} ({n_images} images); trained on {info['data']['train']}. "
        f"Real bitstreams (bpp of the coded streams, as `rdkit bench`). conv models: {epochs['epochs']} planned "
        f"epochs each; fast-vr models: {budget['time_budget']:g} wall-clock minutes each (cosine fitted to it). "
        f"Machine: {info['machine_summary']}.",
        "",
        "At 2.0 bpp (CR 12): the conv models by construction (every image 2.0 bpp), the variable-rate models "
        "read off their curve at a mean of 2.0 bpp (linear between the two trained rates around it), WebP at "
        "its quality closest to 2.0 bpp. ↑ higher is better, ↓ lower is better; "
        "MS-SSIM is not defined on 32x32 images (5 scales need over 160 pixels a side).",
        "",
        *cr12_rows(info),
        "",
        "BD-rate over 1-3 bpp on each metric (the variable-rate models' 7 trained rates; negative: fewer bits "
        "for the same quality; lower-is-better metrics negated for the fit):",
        "",
        *bd_rows(info["bd"], METRICS),
    ]
    if info.get("kodak"):
        k = info["kodak"]
        lines += [
            "",
            f"Kodak ({k['images']}, whole .rdk files at the 7 trained rates, WebP qualities 0-100 step 5):",
            "",
            *bd_rows(k["bd"], KODAK_METRICS),
        ]
    notes = sorted({n for row in info["bd"].values() for r in row.values() for n in r["notes"]})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    lines += ["", f"Command: `{info['command']}` ({info['minutes']:.0f} min)", ""]
    return "\n".join(lines)


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
