"""Codec speed at one thread on Kodak: this tree against a baseline commit, side by side in one run.

Each side runs in its own child process (the baseline from ``git archive`` of
``--baseline``, laid out as the installed package), one at a time and
alternating (baseline, current, baseline, current), with one torch thread.
Per image: the median of ``--repeats`` ``Codec.compress`` and
``Codec.decompress`` calls (model loaded, file in memory); the table gives the
median over images and the ratio current / baseline, measured in the same
run. WebP (method 4, quality 90) is timed beside them in the same way.

    python benchmarks/codec_speed.py --checkpoint runs/fast-vr/best.pt --rate 3 \\
        --images ../shared/data/kodak --baseline a03328b --out benchmarks/results/codec_speed
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from rdkit_ae.machine import machine_summary

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(1)
def rdkit_ae_path():
    import rdkit_ae.plugins
    return rdkit_ae.plugins.__file__
from rdkit_ae.codec import Codec
from rdkit_ae.data.sources import read_image
args = json.loads(sys.argv[1])
codec = Codec.load(args["checkpoint"])
if args["rate"] is not None:
    codec.set_rate(rate=args["rate"])
out = []
for path in args["images"]:
    image, _ = read_image(path)
    data = codec.compress(image)
    codec.decompress(data, trusted=True)  # warm
    enc, dec = [], []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter(); data = codec.compress(image); t1 = time.perf_counter()
        codec.decompress(data, trusted=True); t2 = time.perf_counter()
        enc.append(t1 - t0); dec.append(t2 - t1)
    out.append({"image": path, "bytes": len(data), "encode": statistics.median(enc), "decode": statistics.median(dec)})
print(json.dumps(out))
"""


def export_baseline(ref: str, dest: Path) -> Path:
    """The package of commit ``ref`` laid out as installed: rdkit_ae/, with plugins/ and zoo/ inside it."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", ref, "rdkit_ae", "plugins", "zoo"], capture_output=True)
    if tar.returncode:
        sys.exit(f"git archive {ref} failed: {tar.stderr.decode().strip()}")
    src = dest / "src"
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(src, filter="data")
    pkg = dest / "pkg"
    shutil.copytree(src / "rdkit_ae", pkg / "rdkit_ae")
    shutil.copytree(src / "plugins", pkg / "rdkit_ae" / "plugins")
    shutil.copytree(src / "zoo", pkg / "rdkit_ae" / "zoo")
    return pkg


def baseline_checkpoint(checkpoint: Path, dest: Path) -> Path:
    """The checkpoint without the integer networks of the portable path (which an older release does not know)."""
    from rdkit_ae.checkpoint import load_checkpoint, write_checkpoint

    payload = load_checkpoint(checkpoint)
    payload["model"] = {k: v for k, v in payload["model"].items() if ".exact_" not in k}
    out = dest / "baseline.pt"
    write_checkpoint(out, payload)
    return out


def run_side(pythonpath: str | None, args: dict, cwd: str) -> list[dict]:
    """One side's timings; run outside the repository, where ``python -c`` would import the tree in the cwd first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = pythonpath or str(REPO)
    code = CHILD + "\nassert rdkit_ae_path().startswith(sys.argv[2]), rdkit_ae_path()\n"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, json.dumps(args), env["PYTHONPATH"]],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if proc.returncode:
        sys.exit(proc.stderr.strip()[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def webp_times(paths: list[str], repeats: int) -> dict[str, float]:
    from PIL import Image

    enc, dec = [], []
    for path in paths:
        image = Image.open(path).convert("RGB")
        e, d = [], []
        for _ in range(repeats):
            buf = io.BytesIO()
            t0 = time.perf_counter()
            image.save(buf, "WEBP", quality=90, method=4)
            t1 = time.perf_counter()
            Image.open(io.BytesIO(buf.getvalue())).load()
            t2 = time.perf_counter()
            e.append(t1 - t0)
            d.append(t2 - t1)
        enc.append(float(np.median(e)))
        dec.append(float(np.median(d)))
    return {"encode": float(np.median(enc)), "decode": float(np.median(dec))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--rate", type=float, default=None, help="rate index of a variable-rate model")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating baseline/current runs")
    ap.add_argument("--baseline", default="a03328b", help="git commit to compare with (default: rdkit-ae 0.2)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/codec_speed"))
    args = ap.parse_args()
    images = sorted(str(p.resolve()) for p in args.images.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_baseline(args.baseline, Path(tmp))
        base_ck = baseline_checkpoint(args.checkpoint, Path(tmp))
        common = {"rate": args.rate, "images": images, "repeats": args.repeats}
        runs: dict[str, list[list[dict]]] = {"baseline": [], "current": []}
        for _ in range(args.rounds):
            runs["baseline"].append(run_side(str(pkg), {**common, "checkpoint": str(base_ck)}, tmp))
            runs["current"].append(run_side(None, {**common, "checkpoint": str(args.checkpoint.resolve())}, tmp))
    summary = {}
    for side, rounds in runs.items():
        per_image = {
            k: [float(np.median([r[i][k] for r in rounds])) for i in range(len(images))] for k in ("encode", "decode")
        }
        summary[side] = {k: float(np.median(v)) for k, v in per_image.items()}
        summary[side]["bytes"] = float(np.mean([r["bytes"] for r in rounds[0]]))
    summary["webp"] = webp_times(images, args.repeats)
    ratio = {k: summary["current"][k] / summary["baseline"][k] for k in ("encode", "decode")}
    machine = machine_summary(threads=1)

    def row(label: str, side: dict, nbytes: str) -> str:
        return f"| {label} | {1000 * side['encode']:.1f} | {1000 * side['decode']:.1f} | {nbytes} |"

    lines = ["| | encode (ms) | decode (ms) | bytes per image |", "|---|---|---|---|"]
    lines.append(row(f"baseline {args.baseline}", summary["baseline"], f"{summary['baseline']['bytes']:,.0f}"))
    lines.append(row("this tree", summary["current"], f"{summary['current']['bytes']:,.0f}"))
    lines.append(f"| ratio | {ratio['encode']:.2f}x | {ratio['decode']:.2f}x | |")
    lines.append(row("WebP m4 q90 (Pillow)", summary["webp"], ""))
    text = "\n".join(lines) + (
        f"\n\nMedian over {len(images)} images of the median of {args.repeats} calls, "
        f"{args.rounds} alternating rounds; {args.checkpoint.name} at rate {args.rate}; {machine}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"summary": summary, "ratio": ratio, "machine": machine}, indent=1) + "\n"
    )
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
