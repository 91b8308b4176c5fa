"""The perceptual training step against the MSE step: conv-hybrid's speed options side by side.

``benchmarks/train_speed.py`` runs it as a child process and appends its tables; on its own:

    python benchmarks/perceptual_speed.py                 # this machine, then a child without bf16
    python benchmarks/perceptual_speed.py --steps 4 --rounds 1 --no-child   # smoke test

Every variant is the toolkit's training step (``build_training`` +
``TrainStep``) of a zoo recipe with ``vgg-perceptual`` overrides; they run
interleaved step by step on the same batches (rotating order). A variant's
ms/step is the median over rounds of the round's mean step time: with
``every = k`` only one step in k pays for the VGG term, so a per-step median
would hide it; the steps per round are a multiple of every k.

"Without bf16" reruns the comparison in a child process with
``ONEDNN_MAX_CPU_ISA`` capped below the bf16 instructions (AVX512_CORE_VNNI by
default), where ``precision = "auto"`` resolves to fp32: the ratio a CPU
without native bf16 gets from the zoo's settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
VGG_FILE = REPO.parent / "shared" / "models" / "vgg16-caffe-features-conv1_1-conv4_3.pth"
VGG = "loss.vgg-perceptual"
LAYERS_12 = ["relu1_2", "relu2_2"]
#: label -> (recipe, overrides). The first is the denominator of every ratio.
VARIANTS: dict[str, tuple[str, dict]] = {
    "conv-mse": ("conv-mse", {}),
    "conv-hybrid fp32 (reference)": ("conv-hybrid", {f"{VGG}.precision": "fp32", f"{VGG}.every": 1}),
    "conv-hybrid bf16": ("conv-hybrid", {f"{VGG}.precision": "bf16", f"{VGG}.every": 1}),
    "conv-hybrid fp32, relu1_2+relu2_2": ("conv-hybrid", {f"{VGG}.precision": "fp32", f"{VGG}.layers": LAYERS_12}),
    "conv-hybrid bf16, relu1_2+relu2_2": ("conv-hybrid", {f"{VGG}.precision": "bf16", f"{VGG}.layers": LAYERS_12}),
    "conv-hybrid fp32, every 4": ("conv-hybrid", {f"{VGG}.precision": "fp32", f"{VGG}.every": 4}),
    "conv-hybrid bf16, every 4": ("conv-hybrid", {f"{VGG}.precision": "bf16", f"{VGG}.every": 4}),
    "conv-hybrid fp32, batch_fraction 0.25": (
        "conv-hybrid",
        {f"{VGG}.precision": "fp32", f"{VGG}.batch_fraction": 0.25},
    ),
    "conv-hybrid bf16, batch_fraction 0.25": (
        "conv-hybrid",
        {f"{VGG}.precision": "bf16", f"{VGG}.batch_fraction": 0.25},
    ),
    "conv-hybrid bf16, relu1_2+relu2_2, batch_fraction 0.5": (
        "conv-hybrid",
        {f"{VGG}.precision": "bf16", f"{VGG}.layers": LAYERS_12, f"{VGG}.batch_fraction": 0.5},
    ),
    "conv-hybrid bf16, relu1_2+relu2_2, batch_fraction 0.25": (
        "conv-hybrid",
        {f"{VGG}.precision": "bf16", f"{VGG}.layers": LAYERS_12, f"{VGG}.batch_fraction": 0.25},
    ),
    "conv-hybrid fp32, relu1_2+relu2_2, batch_fraction 0.25": (
        "conv-hybrid",
        {f"{VGG}.precision": "fp32", f"{VGG}.layers": LAYERS_12, f"{VGG}.batch_fraction": 0.25},
    ),
    "conv-hybrid (zoo settings)": ("conv-hybrid", {}),
    "conv-hybrid-fast (zoo settings)": ("conv-hybrid-fast", {}),
}
#: what the child without bf16 measures
CHILD_VARIANTS = (
    "conv-mse",
    "conv-hybrid fp32 (reference)",
    "conv-hybrid fp32, relu1_2+relu2_2, batch_fraction 0.25",
    "conv-hybrid (zoo settings)",
    "conv-hybrid-fast (zoo settings)",
)
NO_BF16_ISA = "AVX512_CORE_VNNI"


def make_batches(n: int, batch: int, seed: int) -> list[torch.Tensor]:
    """Training batches of 32x32 crops through the toolkit's dataset, as train_speed.py makes them."""
    from rdkit_ae.data.datasets import ImageDataset, train_batches
    from rdkit_ae.data.sources import ImageSet

    if DEV_NPZ.is_file():
        with np.load(DEV_NPZ) as f:
            x = f["x"]
    else:
        x = np.random.default_rng(seed).integers(0, 256, (max(batch * 4, 512), 32, 32, 3), dtype=np.uint8)
    ds = ImageDataset(ImageSet("bench", x), 32, train=True, hflip=True, color_jitter=0.1, seed=seed)
    out: list[torch.Tensor] = []
    for epoch in range(1000):
        ds.set_epoch(epoch)
        out += [ds.__getitems__(idx) for idx in train_batches(ds, batch, epoch, seed) if len(idx) == batch]
        if len(out) >= n:
            return out[:n]
    raise SystemExit("too few images for one batch")


class ToolkitStep:
    """The toolkit's training step as ``train()`` runs it per batch (train_speed.py's Toolkit)."""

    def __init__(self, recipe):
        from rdkit_ae.training.optim import TrainStep, build_training

        self.model, self.objective, opt, aux_opt, self.schedule = build_training(recipe, "cpu", steps_per_epoch=1000)
        self.step = TrainStep(self.model, self.objective, opt, aux_opt, float(recipe.train["clip_grad"]))
        self.acc = torch.zeros(len(self.objective.names) + 1 + (aux_opt is not None))

    def __call__(self, x: torch.Tensor) -> None:
        self.acc += self.step(x)
        if self.schedule.interval == "step":
            self.schedule.step()
        if bool((~torch.isfinite(self.acc)).any()):
            raise FloatingPointError("non-finite loss in the benchmark")


def _settings(step) -> tuple[int, str, float, str]:
    """(every, resolved precision, batch_fraction, layers) of a toolkit step's vgg-perceptual term."""
    from rdkit_ae.plugins import vgg

    for term in step.objective.terms:
        if hasattr(term, "every"):
            prec = vgg.resolve_precision(term.precision, torch.device("cpu"))
            return term.every, prec, term.batch_fraction, "+".join(term.layers)
    return 1, "-", 1.0, "-"


def compare(batches: list[torch.Tensor], labels, steps: int, rounds: int, warmup: int, seed: int) -> dict:
    """ms/step of each variant (median over rounds of the round mean) and its ratio to the first."""
    from rdkit_ae.recipe import load_recipe

    impls, info = {}, {}
    for label in labels:
        name, overrides = VARIANTS[label]
        torch.manual_seed(seed)
        impls[label] = ToolkitStep(load_recipe(name, overrides=overrides))
        info[label] = _settings(impls[label])
    period = math.lcm(*(settings[0] for settings in info.values()))
    if steps % period:
        raise SystemExit(f"--perceptual-steps must be a multiple of {period} (every k of the variants)")
    for fn in impls.values():
        for x in batches[: max(warmup, period)]:
            fn(x)
    keys = list(impls)
    sums: dict[str, list[float]] = {k: [0.0] * rounds for k in keys}
    for r in range(rounds):
        for i in range(steps):
            x = batches[(r * steps + i) % len(batches)]
            k = r * steps + i
            for key in keys[k % len(keys) :] + keys[: k % len(keys)]:
                t = time.perf_counter()
                impls[key](x)
                sums[key][r] += time.perf_counter() - t
    ms = {k: statistics.median(s) / steps * 1e3 for k, s in sums.items()}
    base = ms[keys[0]]
    return {
        "ms_per_step": ms,
        "ratio_to_mse": {k: v / base for k, v in ms.items()},
        "every": {k: info[k][0] for k in keys},
        "precision": {k: info[k][1] for k in keys},
        "batch_fraction": {k: info[k][2] for k in keys},
        "layers": {k: info[k][3] for k in keys},
        "steps": steps,
        "rounds": rounds,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
    }


def run_child(args: argparse.Namespace, isa: str) -> dict | None:
    """The comparison in a fresh process whose oneDNN may not use bf16 instructions."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, str(HERE / "perceptual_speed.py"), "--no-child", "--child-json", str(out)]
        cmd += ["--steps", str(args.steps), "--rounds", str(args.rounds), "--batch", str(args.batch)]
        cmd += ["--threads", str(torch.get_num_threads()), "--labels", *CHILD_VARIANTS]
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            print(f"note: the child without bf16 failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def table(res: dict, title: str) -> list[str]:
    head = "| variant | VGG layers | precision | every | batch_fraction | ms/step | x conv-mse |"
    rows = [title, "", head, "|---|---|---|---|---|---|---|"]
    for k, v in res["ms_per_step"].items():
        if k == "conv-mse":
            rows.append(f"| {k} | - | - | - | - | {v:.1f} | 1.00 |")
            continue
        settings = f"{res['layers'][k]} | {res['precision'][k]} | {res['every'][k]} | {res['batch_fraction'][k]:g}"
        rows.append(f"| {k} | {settings} | {v:.1f} | {res['ratio_to_mse'][k]:.2f} |")
    return rows


def run(args: argparse.Namespace, batches: list[torch.Tensor]) -> dict:
    """The comparison here and, unless --no-child, in a child without bf16; prints both."""
    res = {"here": compare(batches, args.labels, args.steps, args.rounds, args.warmup, args.seed)}
    print("\n".join(table(res["here"], "perceptual step against the MSE step (this machine):")))
    if not args.no_child:
        child = run_child(args, args.no_bf16_isa)
        if child is not None:
            res["without_bf16"] = child
            print("\n".join(table(child, f"the same without bf16 (ONEDNN_MAX_CPU_ISA={args.no_bf16_isa}):")))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--labels", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--no-child", action="store_true", help="skip the rerun without bf16")
    ap.add_argument("--no-bf16-isa", default=NO_BF16_ISA, help="ONEDNN_MAX_CPU_ISA of the child without bf16")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    ap.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "RDKIT_VGG_WEIGHTS" not in os.environ and VGG_FILE.is_file():
        os.environ["RDKIT_VGG_WEIGHTS"] = str(VGG_FILE)
        os.environ.setdefault("RDKIT_VGG_PREPROCESSING", "caffe")
    batches = make_batches(args.steps + args.warmup, args.batch, args.seed)
    if args.child_json:
        res = compare(batches, args.labels, args.steps, args.rounds, args.warmup, args.seed)
        args.child_json.write_text(json.dumps(res))
        return 0
    res = run(args, batches)
    md = "\n".join(table(res["here"], "Perceptual step against the MSE step:"))
    if "without_bf16" in res:
        title = f"The same without bf16 (a child process with ONEDNN_MAX_CPU_ISA={args.no_bf16_isa}):"
        md += "\n\n" + "\n".join(table(res["without_bf16"], title))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if args.markdown:
        args.markdown.write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
