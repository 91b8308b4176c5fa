"""Time to quality: what a CPU budget buys, against WebP, with real bitstreams.

Trains a recipe (default ``fast-vr``, one variable-rate model for the whole
curve) on images 0-2499 of ``dev.npz`` for each total training budget (5, 15
and 30 minutes by default), evaluates it on images 2500-2999, which no model
saw, at every trained operating point, and compares it with WebP (Pillow,
method 6, every quality 0-100) on the same images. Rates are whole ``.rdk``
files (container header included) and whole WebP files.

Reports (``--out``, default ``benchmarks/results/time_to_quality``):
``results.json`` (every curve, CompressAI-style), ``table.md`` (BD-rate and
BD-PSNR against WebP over 1-3 bpp, PSNR at 2.0 bpp = CR 12, steps, minutes),
``rd.png`` and ``psnr_vs_minutes.png``. ``--ablations`` trains the recipe
once more per lever with that lever switched off, at ``--ablation-budget``
minutes each.

The learning-rate schedule needs a planned length: a short probe measures
steps per second with the machine as it is, the plan is set to what the
budget allows, and the budget also stops training (whichever comes first).

    python benchmarks/time_to_quality.py                       # 5, 15, 30 min (~55 min)
    python benchmarks/time_to_quality.py --budgets 5 --ablations --ablation-budget 5

Run it alone: another torch process on the same cores changes every figure.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from train_speed import cpu_name  # benchmarks/ is on sys.path when this script runs

import rdkit_ae
from rdkit_ae.checkpoint import load_model
from rdkit_ae.data import ImageSet
from rdkit_ae.evaluation import classic, evaluate
from rdkit_ae.evaluation.bdrate import bjontegaard
from rdkit_ae.files import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
RATE_WINDOW = (1.0, 3.0)  # bpp range of the BD figures
CR12_BPP = 2.0

# Each lever of issue #9 switched off in turn (overrides on top of the recipe).
ABLATIONS: dict[str, list[str]] = {
    "no linear shortcut (nonlinear transform only)": ["encoder.linear=false"],
    "no nonlinear residual (linear transform coder)": ["encoder.nonlinear=false"],
    "factorized entropy model instead of the mean-scale hyperprior": [
        'quantizer.inner={ name = "factorized-entropy", mixed = true }'
    ],
    "no mixed quantization (noise everywhere)": ["quantizer.inner.mixed=false"],
    "no EMA": ["train.callbacks=[]"],
    "no warmup, peak lr 1e-3": ["train.warmup_steps=0", "train.optimizer.lr=1e-3"],
}


def split(path: Path, tmp: Path) -> tuple[Path, ImageSet]:
    x = np.load(path)["x"]
    if len(x) < 3000:
        sys.exit(f"{path}: expected the 3,000 images of dev.npz, found {len(x)}")
    train = tmp / "train.npz"
    np.savez(train, x=x[:2500])
    return train, ImageSet("dev[2500:3000]", array=x[2500:3000])


def probe_steps_per_second(recipe: str, overrides: list[str], data: Path, tmp: Path, threads: int) -> float:
    """Steps per second of this recipe on this machine now (a 40-step run, the first 10 as warm-up)."""
    rates = []
    for steps in (10, 40):
        t0 = time.perf_counter()
        rdkit_ae.train(
            recipe,
            data=data,
            out=tmp / f"probe{steps}",
            overrides=overrides,
            max_steps=steps,
            threads=threads,
            quiet=True,
            evaluate=False,
        )
        rates.append((steps, time.perf_counter() - t0))
    (s0, t0_), (s1, t1) = rates
    return (s1 - s0) / max(t1 - t0_, 1e-6)


def train_for(recipe, overrides, data, out, minutes, threads, steps_per_s) -> tuple[Path, dict]:
    # 225 steps per epoch: 2,250 training images (10% of the 2,500 held out for validation) at batch 64
    per_epoch = math.ceil(2250 / 64)
    epochs = max(1, round(minutes * 60 * steps_per_s / per_epoch))
    t0 = time.perf_counter()
    res = rdkit_ae.train(
        recipe,
        data=data,
        out=out,
        overrides=[*overrides, f"train.epochs={epochs}"],
        time_budget=minutes,
        threads=threads,
        quiet=True,
        evaluate=False,
    )
    info = {"minutes": minutes, "train_s": time.perf_counter() - t0, "steps": res.steps, "planned_epochs": epochs}
    info["stopped"] = res.stopped
    return Path(res.best_checkpoint or res.last_checkpoint), info


def rd_points(checkpoint: Path, images: ImageSet) -> dict[str, list[float]]:
    """bpp (whole .rdk files) and PSNR at every trained operating point of a checkpoint."""
    model, _, _ = load_model(checkpoint)
    points = range(len(model.latent_codec.lambdas)) if model.variable_rate else [None]
    bpp, psnr, lmbdas = [], [], []
    for index in points:
        if index is not None:
            lmbdas.append(model.latent_codec.lambdas[index])
            model.set_rate(index=index)
        s = evaluate(model, images, batch_size=100, check_exact=False).summary
        bpp.append(float(s["container_bpp"]))
        psnr.append(float(s["psnr"]))
    return {"bpp": bpp, "psnr-rgb": psnr, "lambda": lmbdas}


def window(bpp: list[float], psnr: list[float]) -> tuple[list[float], list[float]]:
    """The points inside the BD rate window plus the nearest one outside on each side."""
    order = np.argsort(bpp)
    b, p = np.asarray(bpp)[order], np.asarray(psnr)[order]
    lo = max(int(np.searchsorted(b, RATE_WINDOW[0])) - 1, 0)
    hi = min(int(np.searchsorted(b, RATE_WINDOW[1])) + 1, len(b))
    return b[lo:hi].tolist(), p[lo:hi].tolist()


def psnr_at(bpp: list[float], psnr: list[float], rate: float) -> float | None:
    order = np.argsort(bpp)
    b, p = np.asarray(bpp)[order], np.asarray(psnr)[order]
    return float(np.interp(rate, b, p)) if b[0] <= rate <= b[-1] else None


def summarize(name: str, curve: dict, webp: dict, info: dict) -> dict:
    bd = bjontegaard(*window(webp["bpp"], webp["psnr-rgb"]), *window(curve["bpp"], curve["psnr-rgb"]))
    return {
        "name": name,
        **info,
        "bd_rate_vs_webp": bd.bd_rate,
        "bd_psnr_vs_webp": bd.bd_psnr,
        "bd_method": bd.method,
        "bd_notes": bd.notes,
        "psnr_at_2bpp": psnr_at(curve["bpp"], curve["psnr-rgb"], CR12_BPP),
        "webp_psnr_at_2bpp": psnr_at(webp["bpp"], webp["psnr-rgb"], CR12_BPP),
        "results": curve,
    }


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def write_table(path: Path, rows: list[dict], header: str) -> None:
    lines = [
        header,
        "",
        "| curve | budget (min) | steps | BD-rate vs WebP, 1-3 bpp | BD-PSNR | PSNR at 2.0 bpp (WebP) | bpp range |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["results"]["bpp"]
        lines.append(
            f"| {r['name']} | {r['minutes']:g} | {r['steps']:,} | {fmt(r['bd_rate_vs_webp'], '+.1f')}% "
            f"| {fmt(r['bd_psnr_vs_webp'], '+.2f')} dB | {fmt(r['psnr_at_2bpp'], '.2f')} "
            f"({fmt(r['webp_psnr_at_2bpp'], '.2f')}) | {min(b):.2f}-{max(b):.2f} |"
        )
    notes = sorted({n for r in rows for n in r["bd_notes"]})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(out: Path, curves: list[dict], webp: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(webp["bpp"], webp["psnr-rgb"], "k--", label="WebP (method 6)")
    for c in curves:
        ax.plot(c["results"]["bpp"], c["results"]["psnr-rgb"], "o-", ms=3, label=c["name"])
    ax.set(xlabel="bpp (whole files)", ylabel="PSNR (dB)", xlim=(0.3, 4.0), title="CIFAR-10 dev 2500-2999")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)

    budget = [c for c in curves if c.get("kind") == "budget"]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    mins = [c["minutes"] for c in budget]
    ax.plot(mins, [c["psnr_at_2bpp"] for c in budget], "o-", label="learned, at 2.0 bpp")
    ax.axhline(budget[0]["webp_psnr_at_2bpp"], color="k", ls="--", label="WebP at 2.0 bpp")
    ax.set(xlabel="training budget (CPU minutes, 2 cores)", ylabel="PSNR at 2.0 bpp (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr_vs_minutes.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--recipe", default="fast-vr")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (repeatable)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[5, 15, 30], help="training minutes per curve")
    ap.add_argument("--ablations", action="store_true", help="also train with each lever switched off")
    ap.add_argument("--ablation-budget", type=float, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "time_to_quality")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (the dev split of CIFAR-10, see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="ttq-") as tmp_name:
        tmp = Path(tmp_name)
        train_npz, images = split(args.data, tmp)
        t0 = time.perf_counter()
        webp_eval = classic.sweep(images, "webp", list(range(101)), options={"method": 6})
        webp = {"bpp": [r.summary["bpp"] for r in webp_eval], "psnr-rgb": [r.summary["psnr"] for r in webp_eval]}
        print(f"WebP anchor: {time.perf_counter() - t0:.0f} s", flush=True)

        runs = [("budget", f"{args.recipe}, {m:g} min", m, list(args.overrides)) for m in args.budgets]
        if args.ablations:
            runs += [
                ("ablation", f"{args.recipe} {label}", args.ablation_budget, [*args.overrides, *ov])
                for label, ov in ABLATIONS.items()
            ]
        rows = []
        for i, (kind, name, minutes, overrides) in enumerate(runs):
            sps = probe_steps_per_second(args.recipe, overrides, train_npz, tmp / f"run{i}", args.threads)
            run_dir = tmp / f"run{i}" / "train"
            ckpt, info = train_for(args.recipe, overrides, train_npz, run_dir, minutes, args.threads, sps)
            row = summarize(name, rd_points(ckpt, images), webp, {**info, "probe_steps_per_s": sps})
            row.update(kind=kind, overrides=overrides)
            rows.append(row)
            print(
                f"{name}: {info['steps']} steps, BD-rate {fmt(row['bd_rate_vs_webp'], '+.1f')}%, "
                f"{fmt(row['psnr_at_2bpp'], '.2f')} dB at 2 bpp",
                flush=True,
            )
            write_json(args.out / "results.json", {"webp": webp, "curves": rows, "machine": machine(args)})

    header = (
        f"Time to quality: `{args.recipe}` trained on dev.npz images 0-2499, evaluated on 2500-2999 "
        f"(real .rdk files, container included) against WebP (method 6) on the same images. "
        f"Machine: {machine(args)['summary']}."
    )
    write_table(args.out / "table.md", rows, header)
    plot(args.out, rows, webp)
    print((args.out / "table.md").read_text())


def machine(args) -> dict:
    import os

    return {
        "summary": f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}",
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    main()
