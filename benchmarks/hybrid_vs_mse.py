"""conv-hybrid (MSE + 0.1 VGG perceptual) against conv-mse: same data, same budget, real bitstreams.

Trains both recipes with ``rdkit_ae.training.train`` on the same split of the
same data (default ../shared/data/cifar10-lossless/dev.npz, validation = 10%
chosen by the seed), with the same planned epochs and, if given, the same
time budget; each run ends with the real-bitstream evaluation of its best.pt
on the validation split. Writes a markdown table (default
benchmarks/results/hybrid_vs_mse.md) and prints it.

    python benchmarks/hybrid_vs_mse.py                       # 20 epochs each (schedule completes for both)
    python benchmarks/hybrid_vs_mse.py --time-budget 10      # also cap each at 10 minutes (equal wall-clock)
    python benchmarks/hybrid_vs_mse.py --recipes conv-hybrid \
        --variant "linear shortcut" encoder.shortcut=linear decoder.shortcut=linear   # with and without

``--variant LABEL OVERRIDE...`` (repeatable) also trains every recipe with
those overrides, under the same budget, as one more row.

The VGG weights come from RDKIT_VGG_WEIGHTS / RDKIT_VGG_PREPROCESSING; when
they are unset and ../shared/models holds the Caffe VGG-16 file, that file is
used with Caffe preprocessing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
VGG_FILE = REPO.parent / "shared" / "models" / "vgg16-caffe-features-conv1_1-conv4_3.pth"
RECIPES = ("conv-mse", "conv-hybrid")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEV_NPZ))
    ap.add_argument("--epochs", type=int, default=20, help="planned epochs for both (the cosine schedule spans them)")
    ap.add_argument("--time-budget", type=float, default=None, help="minutes per model (stops at an epoch boundary)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-val", type=int, default=None)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override applied to both recipes")
    ap.add_argument(
        "--runs", type=Path, default=None, help="folder for the two run folders [default: runs/hybrid-vs-mse-<time>]"
    )
    ap.add_argument("--markdown", type=Path, default=REPO / "benchmarks" / "results" / "hybrid_vs_mse.md")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), help=f"recipes to compare [default: {RECIPES}]")
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="LABEL OVERRIDE",
        help="also train each recipe with these overrides (repeatable)",
    )
    args = ap.parse_args(argv)

    if "RDKIT_VGG_WEIGHTS" not in os.environ and VGG_FILE.is_file():
        os.environ["RDKIT_VGG_WEIGHTS"] = str(VGG_FILE)
        os.environ.setdefault("RDKIT_VGG_PREPROCESSING", "caffe")
    import torch

    from rdkit_ae.training import train

    runs = args.runs or Path("runs") / f"hybrid-vs-mse-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = []
    if any(len(v) < 2 for v in args.variant):
        ap.error("--variant takes a label and at least one override")
    variants = [("", [])] + [(v[0], v[1:]) for v in args.variant]
    for name, (label, extra) in [(r, v) for r in args.recipes for v in variants]:
        t0 = time.perf_counter()
        folder = name + ("-" + "-".join(label.split()) if label else "")
        res = train(
            name,
            args.data,
            runs / folder,
            overrides=[*args.overrides, *extra],
            epochs=args.epochs,
            max_steps=args.max_steps,
            limit_train=args.limit_train,
            limit_val=args.limit_val,
            time_budget=args.time_budget,
            val_fraction=args.val_fraction,
            seed=args.seed,
            threads=args.threads,
            quiet=args.quiet,
        )
        wall = time.perf_counter() - t0
        s = res.eval["summary"]
        last = res.metrics[-1]
        rows.append(
            {
                "recipe": name + (f" + {label} ({' '.join(extra)})" if label else ""),
                "epochs": res.epochs,
                "steps": res.steps,
                "stopped": res.stopped,
                "minutes": wall / 60,
                "images_per_s": last.get("images_per_s"),
                "psnr": s.get("psnr"),
                "ssim": s.get("ssim"),
                "bpp": s.get("bpp"),
                "cr": s.get("cr"),
                "est_bpp": last.get("val_bpp"),
                "n": s.get("n_images"),
                "run": runs / folder,
            }
        )

    budget = f"{args.epochs} planned epochs" + (f", at most {args.time_budget:g} min each" if args.time_budget else "")
    if args.max_steps:
        budget += f", at most {args.max_steps} steps"
    from rdkit_ae.machine import machine_summary

    machine = machine_summary(threads=args.threads or torch.get_num_threads())
    lines = [
        "# " + " vs ".join(args.recipes) + "".join(f", with and without {label}" for label, _ in variants[1:]),
        "",
        f"Measured {dt.date.today().isoformat()} on {machine}. Data: `{args.data}` "
        f"(validation: {args.val_fraction:g} of it, chosen by seed {args.seed}"
        + (f", first {args.limit_val}" if args.limit_val else "")
        + "; training: the rest"
        + (f", first {args.limit_train}" if args.limit_train else "")
        + f"). Budget: {budget}."
        + (f" Overrides for both: {' '.join(args.overrides)}." if args.overrides else ""),
        f"VGG weights: {os.environ.get('RDKIT_VGG_WEIGHTS', 'torchvision')}"
        f" ({os.environ.get('RDKIT_VGG_PREPROCESSING', 'torchvision')} preprocessing).",
        "Quality and rate from real bitstreams of each run's best.pt on the validation images.",
        "",
        "| recipe | epochs | steps | minutes (train + eval) | img/s | PSNR (dB) | SSIM | bpp (real) | CR"
        " | bpp (estimate) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['epochs']} | {r['steps']} | {r['minutes']:.1f} | {_fmt(r['images_per_s'], ',.0f')} "
            f"| {_fmt(r['psnr'], '.2f')} | {_fmt(r['ssim'], '.4f')} | {_fmt(r['bpp'], '.3f')} | {_fmt(r['cr'], '.1f')} "
            f"| {_fmt(r['est_bpp'], '.3f')} |"
        )
    lines += [
        "",
        "Command: `python "
        + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
        + "`",
        f"Run folders: {', '.join(str(r['run']) for r in rows)}",
        "",
    ]
    text = "\n".join(lines)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
