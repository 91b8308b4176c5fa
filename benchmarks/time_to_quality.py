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
``rd.png``, ``psnr_vs_minutes.png`` and ``ablations.png``. Curves are kept
by name: a later invocation replaces the curves it trains and keeps the
others (``--fresh`` starts over), so budgets and ablations can be run apart.

``--ablations`` trains the recipe once with every lever on and once per lever
with that lever switched off (or only the levers named), at
``--ablation-budget`` minutes each; ``--jobs 2 --threads 1`` trains two at a
time, one core each (every row of the table then runs under the same
conditions, its base included). The ``fixed-rate`` lever splits the budget
over separate fixed-rate trainings, one per operating point: the cost of a
curve without variable-rate training.

The learning-rate schedule needs a planned length: a short probe measures
steps per second with the machine as it is, the plan is set to what the
budget allows, and the budget also stops training (whichever comes first).

    python benchmarks/time_to_quality.py                       # 5, 15, 30 min (~55 min)
    python benchmarks/time_to_quality.py --budgets --ablations --jobs 2 --threads 1   # ~85 min
    python benchmarks/time_to_quality.py --budgets --ablations no-ema fixed-rate --ablation-budget 5

Run it alone: another torch process on the same cores changes every figure.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
RATE_WINDOW = (1.0, 3.0)  # bpp range of the BD figures
CR12_BPP = 2.0
BATCH = 64  # the recipes' batch size, for the planned epochs
STEPS_PER_EPOCH = math.ceil(2250 / BATCH)  # 2,250 training images: 10% of the 2,500 are held out for validation

# The fixed-rate counterpart of a gain-unit recipe: its inner quantizer alone,
# trained once per lambda (4 of fast-vr's 7, spanning 0.9-3.3 bpp).
FIXED_RATE_LAMBDAS = (0.0032, 0.0128, 0.0512, 0.1024)
FIXED_RATE = "fixed-rate"

# Each lever of issue #9 switched off in turn: key -> (label, overrides on top of the recipe).
ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "base": ("all levers on", []),
    "no-linear": ("no linear shortcut (nonlinear transform only)", ["encoder.linear=false"]),
    "no-nonlinear": ("no nonlinear residual (linear transform coder)", ["encoder.nonlinear=false"]),
    "factorized": (
        "factorized entropy model instead of the mean-scale hyperprior",
        ['quantizer.inner={ name = "factorized-entropy", mixed = true }'],
    ),
    "no-mixed": ("no mixed quantization (noise everywhere)", ["quantizer.inner.mixed=false"]),
    "no-ema": ("no EMA", ["train.callbacks=[]"]),
    "no-warmup": ("no warmup, peak lr 1e-3", ["train.warmup_steps=0", "train.optimizer.lr=1e-3"]),
    "no-channels-last": ("no channels-last memory format", ["train.channels_last=false"]),
    FIXED_RATE: (f"no variable rate ({len(FIXED_RATE_LAMBDAS)} fixed-rate trainings sharing the budget)", []),
    # Not in the recipe: the parallel context model switched on (what fast-vr-checkerboard adds).
    "checkerboard": ("with a checkerboard context (lever on)", ["quantizer.inner.name=checkerboard"]),
}


@dataclass(frozen=True)
class Run:
    """One curve to train and measure: picklable, for a process pool."""

    kind: str  # "budget" or "ablation"
    name: str
    minutes: float
    overrides: list[str]
    # Separate trainings sharing the budget, each with these extra overrides (fixed-rate points).
    points: list[list[str]] = field(default_factory=lambda: [[]])


def fixed_rate_points(recipe: str, overrides: list[str]) -> list[list[str]]:
    """One fixed-rate training per lambda: the gain wrapper's inner quantizer, the rd loss at that lambda."""
    from rdkit_ae.recipe import load_recipe

    quantizer = load_recipe(recipe, overrides)["quantizer"]
    if quantizer.get("name") != "gain":
        sys.exit(f"--ablations {FIXED_RATE}: recipe {recipe!r} is not variable-rate (quantizer 'gain')")
    inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in quantizer["inner"].items())
    return [[f"quantizer={{ {inner} }}", f"loss.rd.lmbda={lm}"] for lm in FIXED_RATE_LAMBDAS]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def split(path: Path, tmp: Path):
    from rdkit_ae.data import ImageSet

    x = np.load(path)["x"]
    if len(x) < 3000:
        sys.exit(f"{path}: expected the 3,000 images of dev.npz, found {len(x)}")
    train = tmp / "train.npz"
    np.savez(train, x=x[:2500])
    return train, ImageSet("dev[2500:3000]", array=x[2500:3000])


def probe_steps_per_second(recipe: str, overrides: list[str], data: Path, tmp: Path, threads: int) -> float:
    """Steps per second of this recipe on this machine now: the training throughput of a 2-epoch run's second epoch.

    Timed by the training itself (its metrics), so start-up, data-init and
    checkpoint writing, which vary with load, do not enter the figure.
    """
    import rdkit_ae

    res = rdkit_ae.train(
        recipe,
        data=data,
        out=tmp / "probe",
        overrides=overrides,
        max_steps=2 * STEPS_PER_EPOCH,
        threads=threads,
        quiet=True,
        evaluate=False,
    )
    images_per_s = res.metrics[-1].get("images_per_s")
    if not images_per_s:
        sys.exit(f"{recipe}: the probe run recorded no throughput")
    return float(images_per_s) / BATCH


def train_for(recipe, overrides, data, out, minutes, threads, steps_per_s) -> tuple[Path, dict]:
    import rdkit_ae

    # 10% beyond the probe's pace: validation and a busier machine slow a run down, and a plan that ends
    # before the budget would leave minutes unused (the time budget stops an over-long plan).
    epochs = max(1, round(1.1 * minutes * 60 * steps_per_s / STEPS_PER_EPOCH))
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


def rd_points(checkpoint: Path, images) -> dict[str, list[float]]:
    """bpp (whole .rdk files) and PSNR at every trained operating point of a checkpoint."""
    from rdkit_ae.checkpoint import load_model
    from rdkit_ae.evaluation import evaluate

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


def measure(
    run: Run, recipe: str, train_npz: Path, images, tmp: Path, threads: int, webp: dict, keep: Path | None = None
) -> dict:
    """Train one curve (each of its points for an equal share of the budget) and measure it against WebP.

    ``keep``: a folder to copy each training's checkpoint to (e.g. for ``held_out.py``).
    """
    import shutil

    import torch

    torch.set_num_threads(threads)
    curve: dict[str, list[float]] = {"bpp": [], "psnr-rgb": [], "lambda": []}
    info = {"minutes": run.minutes, "train_s": 0.0, "steps": 0, "planned_epochs": [], "stopped": [], "probe": []}
    for j, extra in enumerate(run.points):
        overrides = [*run.overrides, *extra]
        sps = probe_steps_per_second(recipe, overrides, train_npz, tmp / f"point{j}", threads)
        share = run.minutes / len(run.points)
        ckpt, part = train_for(recipe, overrides, train_npz, tmp / f"point{j}" / "train", share, threads, sps)
        if keep is not None:
            slug = "".join(c if c.isalnum() else "-" for c in run.name).strip("-")
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, keep / (slug + (f"-{j}" if len(run.points) > 1 else "") + ".pt"))
        for key, values in rd_points(ckpt, images).items():
            curve[key] += values
        info["train_s"] += part["train_s"]
        info["steps"] += part["steps"]
        info["planned_epochs"].append(part["planned_epochs"])
        info["stopped"].append(part["stopped"])
        info["probe"].append(sps)
    row = summarize(run.name, curve, webp, info)
    row.update(kind=run.kind, overrides=run.overrides, points=run.points, threads=threads)
    print(
        f"{run.name}: {info['steps']} steps, BD-rate {fmt(row['bd_rate_vs_webp'], '+.1f')}%, "
        f"{fmt(row['psnr_at_2bpp'], '.2f')} dB at 2 bpp",
        flush=True,
    )
    return row


def webp_curve(images, qualities) -> dict[str, list[float]]:
    """WebP (Pillow, method 6) at these qualities on the images: whole-file bpp and PSNR."""
    from rdkit_ae.evaluation import classic

    results = classic.sweep(images, "webp", list(qualities), options={"method": 6})
    return {"bpp": [r.summary["bpp"] for r in results], "psnr-rgb": [r.summary["psnr"] for r in results]}


def window(bpp: list[float], psnr: list[float], rates=RATE_WINDOW) -> tuple[list[float], list[float]]:
    """The points inside the BD rate window plus the nearest one outside on each side."""
    order = np.argsort(bpp)
    b, p = np.asarray(bpp)[order], np.asarray(psnr)[order]
    lo = max(int(np.searchsorted(b, rates[0])) - 1, 0)
    hi = min(int(np.searchsorted(b, rates[1])) + 1, len(b))
    return b[lo:hi].tolist(), p[lo:hi].tolist()


def psnr_at(bpp: list[float], psnr: list[float], rate: float) -> float | None:
    order = np.argsort(bpp)
    b, p = np.asarray(bpp)[order], np.asarray(psnr)[order]
    return float(np.interp(rate, b, p)) if b[0] <= rate <= b[-1] else None


def summarize(name: str, curve: dict, webp: dict, info: dict, rates=RATE_WINDOW) -> dict:
    from rdkit_ae.evaluation.bdrate import bjontegaard

    bd = bjontegaard(*window(webp["bpp"], webp["psnr-rgb"], rates), *window(curve["bpp"], curve["psnr-rgb"], rates))
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


def table_rows(rows: list[dict], base: dict | None) -> list[str]:
    lines = []
    for r in rows:
        b = r["results"]["bpp"]
        delta = ""
        if base is not None:
            d = None
            if r is not base and None not in (r["bd_rate_vs_webp"], base["bd_rate_vs_webp"]):
                d = r["bd_rate_vs_webp"] - base["bd_rate_vs_webp"]
            delta = f" {fmt(d, '+.1f')} |"
        lines.append(
            f"| {r['name']} | {r['minutes']:g} | {r.get('threads', 2)} x {r.get('jobs', 1)} | {r['steps']:,} "
            f"| {fmt(r['bd_rate_vs_webp'], '+.1f')}% |{delta} {fmt(r['bd_psnr_vs_webp'], '+.2f')} dB "
            f"| {fmt(r['psnr_at_2bpp'], '.2f')} ({fmt(r['webp_psnr_at_2bpp'], '.2f')}) | {min(b):.2f}-{max(b):.2f} |"
        )
    return lines


def write_table(path: Path, rows: list[dict], header: str) -> None:
    cols = (
        "| curve | budget (min) | threads x jobs | steps | BD-rate vs WebP, 1-3 bpp |{} BD-PSNR "
        "| PSNR at 2.0 bpp (WebP) | bpp range |"
    )
    budgets = sorted((r for r in rows if r["kind"] == "budget"), key=lambda r: r["minutes"])
    ablations = [r for r in rows if r["kind"] == "ablation"]
    lines = [header, ""]
    if budgets:
        lines += ["## Budgets", "", cols.format(""), "|---" * 8 + "|", *table_rows(budgets, None), ""]
    if ablations:
        base = next((r for r in ablations if r["name"].endswith(ABLATIONS["base"][0])), None)
        lines += ["## Ablations: each lever switched off in turn", ""]
        lines += [cols.format(" change vs all on (points) |"), "|---" * 9 + "|", *table_rows(ablations, base), ""]
    notes = sorted({n for r in rows for n in r["bd_notes"]})
    if notes:
        lines += ["Notes: " + "; ".join(notes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_rd(path: Path, curves: list[dict], webp: dict, title: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(webp["bpp"], webp["psnr-rgb"], "k--", label="WebP (method 6)")
    for c in curves:
        order = np.argsort(c["results"]["bpp"])
        b, p = np.asarray(c["results"]["bpp"])[order], np.asarray(c["results"]["psnr-rgb"])[order]
        ax.plot(b, p, "o-", ms=3, label=c["name"])
    ax.set(xlabel="bpp (whole files)", ylabel="PSNR (dB)", xlim=(0.3, 4.0), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(out: Path, curves: list[dict], webp: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = sorted((c for c in curves if c["kind"] == "budget"), key=lambda c: c["minutes"])
    ablations = [c for c in curves if c["kind"] == "ablation"]
    if ablations:
        plot_rd(out / "ablations.png", ablations, webp, "Ablations, CIFAR-10 dev 2500-2999")
    if not budget:
        return
    plot_rd(out / "rd.png", budget, webp, "CIFAR-10 dev 2500-2999")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    mins = [c["minutes"] for c in budget]
    ax.plot(mins, [c["psnr_at_2bpp"] for c in budget], "o-", label="learned, at 2.0 bpp")
    ax.axhline(budget[0]["webp_psnr_at_2bpp"], color="k", ls="--", label="WebP at 2.0 bpp")
    ax.set(xlabel="training budget (minutes, 2 cores)", ylabel="PSNR at 2.0 bpp (dB)", xticks=mins)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr_vs_minutes.png", dpi=120)
    plt.close(fig)


def plan_runs(args) -> list[Run]:
    runs = [Run("budget", f"{args.recipe}, {m:g} min", m, list(args.overrides)) for m in args.budgets]
    keys = list(ABLATIONS) if args.ablations == [] else (args.ablations or [])
    for key in keys:
        label, overrides = ABLATIONS[key]
        overrides = [*args.overrides, *overrides]
        points = fixed_rate_points(args.recipe, overrides) if key == FIXED_RATE else [[]]
        runs.append(Run("ablation", f"{args.recipe} {label}", args.ablation_budget, overrides, points))
    return runs


def previous_rows(path: Path, webp: dict, fresh: bool) -> list[dict]:
    """The curves an earlier invocation measured against the same WebP anchor (kept unless re-run)."""
    import json

    if fresh or not path.is_file():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    if not np.allclose(old["webp"]["bpp"], webp["bpp"]) or not np.allclose(old["webp"]["psnr-rgb"], webp["psnr-rgb"]):
        sys.exit(f"{path}: measured on other images (its WebP anchor differs); use --fresh or another --out")
    machine_then = old.get("machine", {}).get("summary")  # results written before curves carried their own
    return [{"kind": "budget", "machine": machine_then, **r} for r in old["curves"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--recipe", default="fast-vr")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (repeatable)")
    ap.add_argument(
        "--budgets", type=float, nargs="*", default=[5, 15, 30], help="training minutes per curve (none: skip)"
    )
    ap.add_argument(
        "--ablations",
        nargs="*",
        choices=list(ABLATIONS),
        default=None,
        metavar="LEVER",
        help=f"train with each lever switched off (all, or those named: {', '.join(ABLATIONS)})",
    )
    ap.add_argument("--ablation-budget", type=float, default=15)
    ap.add_argument("--threads", type=int, default=2, help="threads per training")
    ap.add_argument("--jobs", type=int, default=1, help="trainings at a time (each with --threads threads)")
    ap.add_argument("--fresh", action="store_true", help="forget the curves already in --out")
    ap.add_argument("--keep", type=Path, default=None, help="copy every trained checkpoint to this folder")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "time_to_quality")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (the dev split of CIFAR-10, see ../shared/data/README.md)")
    import torch

    from rdkit_ae.files import write_json

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(args)

    with tempfile.TemporaryDirectory(prefix="ttq-") as tmp_name:
        tmp = Path(tmp_name)
        train_npz, images = split(args.data, tmp)
        t0 = time.perf_counter()
        webp = webp_curve(images, range(101))
        print(f"WebP anchor: {time.perf_counter() - t0:.0f} s", flush=True)
        rows = previous_rows(args.out / "results.json", webp, args.fresh)

        def keep(row: dict) -> None:
            rows[:] = [r for r in rows if r["name"] != row["name"]] + [row]
            row["machine"] = machine(args)["summary"]
            row["jobs"] = args.jobs
            write_json(args.out / "results.json", {"webp": webp, "curves": rows})

        jobs = [
            (run, args.recipe, train_npz, images, tmp / f"run{i}", args.threads, webp, args.keep)
            for i, run in enumerate(runs)
        ]
        if args.jobs == 1:
            for job in jobs:
                keep(measure(*job))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=limit, initargs=(args.threads,)) as pool:
                for row in [pool.submit(measure, *job) for job in jobs]:
                    keep(row.result())

    header = (
        f"Time to quality: `{args.recipe}` trained on dev.npz images 0-2499, evaluated on 2500-2999 "
        f"(real .rdk files, container included) against WebP (method 6) on the same images. "
        f"Budgets in wall-clock minutes of training; machine: {machine(args)['cpu']}. "
        "`threads x jobs`: each training's threads x trainings at a time (steps differ between the two settings)."
    )
    write_table(args.out / "table.md", rows, header)
    plot(args.out, rows, webp)
    print((args.out / "table.md").read_text())


def limit(threads: int) -> None:
    """A pool worker's thread limits, before torch loads."""
    from rdkit_ae.worker_setup import limit_threads

    limit_threads(threads)


def machine(args) -> dict:
    import torch
    from train_speed import cpu_name  # benchmarks/ is on sys.path when this script runs

    cpu = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    return {"summary": f"{cpu}, {args.threads} threads x {args.jobs} jobs", "cpu": cpu}


if __name__ == "__main__":
    main()
