"""Codec speed at one thread on Kodak, side by side in one run: this tree, a baseline commit, CompressAI, WebP.

Each measured model runs in its own child process, one at a time and
alternating over ``--rounds``, with one torch thread: the ``--checkpoint``
models (``fast-vr``, ``fast-vr-checkerboard``) with this tree and with the
``--baseline`` commit (``git archive``, laid out as the installed package),
and CompressAI's ``bmshj2018-hyperprior`` at its published size (quality 3:
N=128, M=192) built by ``compressai.zoo`` with ``pretrained=False`` (the
weights cannot be downloaded here: random weights, tables updated; its
coding time barely depends on the weights) and coded by CompressAI's own
``compress``/``decompress``. Per image: the median of ``--repeats``
``Codec.compress`` and ``Codec.decompress`` calls (model loaded, file in
memory); the table gives the median over images. WebP (Pillow, method 4,
quality 90) is timed in this process in the same run. MACs per pixel of
compress and decompress are counted with ``torch.utils.flop_counter``
(FLOPs / 2 of every convolution and matrix product, the integer networks'
float64 GEMMs included) on the first image.

    python benchmarks/codec_speed.py --checkpoint fast-vr=/work/runs/fast-vr/best.pt \
        --checkpoint fast-vr-checkerboard=/work/runs/fast-vr-cb/best.pt --rate 3 \
        --images ../shared/data/kodak --baseline a463f78 --out benchmarks/results/codec_speed
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
from rdkit_ae.data.sources import read_image, to_tensor
args = json.loads(sys.argv[1])

class CompressAICodec:
    # CompressAI's own model and coder: strings and shape in memory, no container.
    def __init__(self, quality):
        from compressai.zoo import bmshj2018_hyperprior
        torch.manual_seed(0)
        self.model = bmshj2018_hyperprior(quality=quality, pretrained=False).eval()
        self.model.update(force=True)
    def compress(self, image):
        with torch.no_grad():
            return self.model.compress(to_tensor(image.copy()))
    def decompress(self, data, trusted=True):
        with torch.no_grad():
            return self.model.decompress(data["strings"], data["shape"])["x_hat"]
    def size(self, data):
        return sum(len(s[0]) for s in data["strings"])

if args["kind"] == "compressai":
    codec = CompressAICodec(args["quality"])
else:
    from rdkit_ae.codec import Codec
    codec = Codec.load(args["checkpoint"])
    if args["rate"] is not None and codec.rate is not None:
        codec.set_rate(rate=args["rate"])
    codec.size = len
out = []
for n, path in enumerate(args["images"]):
    image, _ = read_image(path)
    data = codec.compress(image)
    codec.decompress(data, trusted=True)  # warm
    row = {"image": path, "bytes": codec.size(data)}
    if args["macs"] and n == 0:
        from torch.utils.flop_counter import FlopCounterMode
        for side in ("encode", "decode"):
            with FlopCounterMode(display=False) as counter:
                codec.compress(image) if side == "encode" else codec.decompress(data, trusted=True)
            row["macs_" + side] = counter.get_total_flops() / 2 / (image.shape[0] * image.shape[1])
    enc, dec = [], []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter(); data = codec.compress(image); t1 = time.perf_counter()
        codec.decompress(data, trusted=True); t2 = time.perf_counter()
        enc.append(t1 - t0); dec.append(t2 - t1)
    row.update(encode=statistics.median(enc), decode=statistics.median(dec))
    out.append(row)
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
    dest.mkdir(parents=True, exist_ok=True)
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


def measure(sides: dict[str, dict], rounds: int) -> dict[str, list[list[dict]]]:
    """Every side's per-image results for each round; sides alternate within a round."""
    runs: dict[str, list[list[dict]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, side in sides.items():
                args = {**side["args"], "macs": r == 0}
                runs[name].append(run_side(side["pythonpath"], args, tmp))
    return runs


def summarise(rounds: list[list[dict]]) -> dict[str, float]:
    """Median over images of the median over rounds; bytes per image; MACs per pixel (first round)."""
    n = len(rounds[0])
    out = {k: float(np.median([np.median([r[i][k] for r in rounds]) for i in range(n)])) for k in ("encode", "decode")}
    out["bytes"] = float(np.mean([row["bytes"] for row in rounds[0]]))
    for k in ("macs_encode", "macs_decode"):
        if k in rounds[0][0]:
            out[k] = float(rounds[0][0][k])
    return out


def render(summary: dict[str, dict], baseline: str, pixels: float, note: str) -> str:
    lines = [
        "| model | code | encode (ms) | decode (ms) | bytes per image | bpp | MACs/px encode | MACs/px decode "
        f"| vs {baseline} encode | decode |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, side in summary.items():
        model, code = name.split(" @ ")
        macs = [f"{side[k] / 1000:,.1f}k" if k in side else "" for k in ("macs_encode", "macs_decode")]
        base = summary.get(f"{model} @ {baseline}")
        ratio = ["", ""]
        if base is not None and code == "this tree":
            ratio = [f"{side[k] / base[k]:.2f}x" for k in ("encode", "decode")]
        bpp = f"{8 * side['bytes'] / pixels:.3f}" if side.get("bytes") else ""
        nbytes = f"{side['bytes']:,.0f}" if side.get("bytes") else ""
        lines.append(
            f"| {model} | {code} | {1000 * side['encode']:.1f} | {1000 * side['decode']:.1f} | {nbytes} | {bpp} "
            f"| {macs[0]} | {macs[1]} | {ratio[0]} | {ratio[1]} |"
        )
    return "\n".join(lines) + "\n\n" + note + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH (repeatable)")
    ap.add_argument("--rate", type=float, default=None, help="rate index of variable-rate models")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of every side")
    ap.add_argument("--baseline", default="a463f78", help="git commit to compare with (default: rdkit-ae 0.3.0)")
    ap.add_argument(
        "--quality", type=int, default=3, help="CompressAI bmshj2018-hyperprior quality (1-5: N=128, M=192)"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/codec_speed"))
    args = ap.parse_args()
    images = sorted(str(p.resolve()) for p in args.images.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    common = {"rate": args.rate, "images": images, "repeats": args.repeats, "kind": "rdk"}
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_baseline(args.baseline, Path(tmp))
        sides: dict[str, dict] = {}
        for spec in args.checkpoint:
            name, _, path = spec.partition("=")
            ck = Path(path).resolve()
            base_ck = baseline_checkpoint(ck, Path(tmp) / name)
            sides[f"{name} @ {args.baseline}"] = {
                "pythonpath": str(pkg),
                "args": {**common, "checkpoint": str(base_ck)},
            }
            sides[f"{name} @ this tree"] = {"pythonpath": None, "args": {**common, "checkpoint": str(ck)}}
        cai = {**common, "kind": "compressai", "quality": args.quality}
        sides[f"CompressAI bmshj2018-hyperprior q{args.quality} (random weights) @ compressai"] = {
            "pythonpath": None,
            "args": cai,
        }
        runs = measure(sides, args.rounds)
    summary = {name: summarise(r) for name, r in runs.items()}
    summary["WebP m4 q90 (Pillow) @ libwebp"] = webp_times(images, args.repeats)
    from PIL import Image

    pixels = float(np.mean([np.prod(Image.open(p).size) for p in images]))
    machine = machine_summary(threads=1)
    note = (
        f"Median over {len(images)} Kodak images of the median of {args.repeats} calls, {args.rounds} alternating "
        f"rounds, one thread; rdkit models at rate {args.rate} (`Codec.compress`/`decompress`, .rdk bytes in memory); "
        f"MACs counted by torch.utils.flop_counter (FLOPs / 2) on the first image; {machine}"
    )
    text = render(summary, args.baseline, pixels, note)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "machine": machine}, indent=1) + "\n")
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
