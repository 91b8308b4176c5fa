"""Perceptual metrics of trained runs on their validation split: PSNR, SSIM, HaarPSI, MS-GMSD from real bitstreams.

For the conv-hybrid speed-option runs of ``benchmarks/hybrid_vs_mse.py``
(``benchmarks/results/perceptual_quality*.md``): each run folder's best.pt
through ``rdkit eval --split val --metrics haarpsi,ms-gmsd`` (the same
validation split as training: 10% chosen by seed 0), one table row per run.

    python benchmarks/perceptual_quality_metrics.py /work/runs/perceptual-quality/* \\
        --markdown benchmarks/results/perceptual_quality_metrics.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"


def evaluate(run: Path, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = ["rdkit", "eval", str(run / "best.pt"), "--data", data, "--split", "val"]
        cmd += ["--metrics", "haarpsi,ms-gmsd", "--no-check", "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True)
        res = json.loads(out.read_text())["results"]
    losses = tomllib.loads((run / "recipe.toml").read_text()).get("loss", [])
    vgg = next((e for e in losses if e.get("name") == "vgg-perceptual"), {})
    keys = ("layers", "precision", "every", "batch_fraction")
    settings = "; ".join(f"{k} {'+'.join(v) if isinstance(v, list) else v}" for k in keys if (v := vgg.get(k)))
    return {"run": f"{run.parent.name}/{run.name}", "settings": settings, **{k: v[0] for k, v in res.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", default=str(DEV_NPZ))
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = ["| run | vgg-perceptual settings | PSNR (dB) | SSIM | HaarPSI (higher better) | MS-GMSD (lower better) |"]
    rows.append("|---|---|---|---|---|---|")
    for run in args.runs:
        r = evaluate(run, args.data)
        rows.append(
            f"| {r['run']} | {r['settings']} | {r['psnr-rgb']:.2f} | {r['ssim-rgb']:.4f} | "
            f"{r['haarpsi-rgb']:.4f} | {r['ms-gmsd-rgb']:.4f} |"
        )
        print(rows[-1], flush=True)
    cmd = shlex.join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(rows) + f"\n\nValidation split of {args.data} (10%, seed 0), real bitstreams of each best.pt.\n"
    text += f"Command: `python benchmarks/perceptual_quality_metrics.py {cmd}`\n"
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
