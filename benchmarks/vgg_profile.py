"""Where a conv-hybrid training step spends its time: the autoencoder against the VGG-16 perceptual term.

One step of conv-hybrid at batch 128 of 32x32 CIFAR crops, split into

- autoencoder forward + MSE + backward (what conv-mse costs),
- VGG target forward (features of the original, no autograd),
- VGG prediction forward (features of the reconstruction, with autograd),
- VGG backward (the perceptual term's gradient back to x_hat),

and then each VGG layer on its own (forward, and forward + backward to its
input), in fp32 and in bf16 autocast, with and without channels-last, with
the target features with and without autograd. Medians of ``--reps`` timed
repetitions after a warm-up.

    python benchmarks/vgg_profile.py --markdown benchmarks/results/vgg_profile.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdkit_ae.machine import machine_summary

REPO = Path(__file__).resolve().parents[1]
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
VGG_FILE = REPO.parent / "shared" / "models" / "vgg16-caffe-features-conv1_1-conv4_3.pth"

LAYERS = ("relu1_2", "relu2_2", "relu3_3")


def timed(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def features(net, x, idx, channels_last: bool):
    from rdkit_ae.plugins import vgg

    h = vgg.preprocess(x, "caffe")
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    out = []
    for i, layer in enumerate(net):
        h = layer(h)
        if i in idx:
            out.append(h)
    return out


def step_breakdown(x, precision: str, channels_last: bool, reps: int) -> dict[str, float]:
    """Milliseconds per part of one conv-hybrid step (medians)."""
    from rdkit_ae.plugins import vgg
    from rdkit_ae.recipe import load_recipe
    from rdkit_ae.training.optim import build_training

    model, _, opt, _, _ = build_training(load_recipe("conv-mse"), "cpu")
    idx = {vgg.LAYERS[n] for n in LAYERS}
    net = vgg.load_features(max(idx), None, "cpu")
    if not channels_last:
        net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)  # the cached one is shared
    x_hat = model(x)["x_hat"].detach().requires_grad_(True)
    parts: dict[str, float] = {}

    def ae():
        loss = F.mse_loss(model(x)["x_hat"], x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def target(grad: bool):
        with torch.set_grad_enabled(grad), autocast(precision):
            return features(net, x, idx, channels_last)

    def pred():
        with autocast(precision):
            return features(net, x_hat, idx, channels_last)

    targets = [t.detach() for t in target(False)]

    def backward():
        with autocast(precision):
            preds = features(net, x_hat, idx, channels_last)
        loss = sum(F.mse_loss(p.float(), t.float()) / t.float().pow(2).mean() for p, t in zip(preds, targets))
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0

    parts["autoencoder fwd+bwd+Adam"] = timed(ae, reps)
    parts["VGG target forward (no autograd)"] = timed(lambda: target(False), reps)
    parts["VGG target forward (with autograd)"] = timed(lambda: target(True), reps)
    parts["VGG prediction forward"] = timed(pred, reps)
    for _ in range(2):
        backward()
    parts["VGG backward"] = statistics.median(backward() for _ in range(reps)) * 1e3
    return parts


def layer_breakdown(x, precision: str, reps: int) -> list[tuple[str, float, float]]:
    """(layer, forward ms, forward+backward ms) for each VGG layer up to relu3_3, channels-last."""
    from rdkit_ae.plugins import vgg

    net = vgg.load_features(vgg.LAYERS["relu3_3"], None, "cpu")
    h = vgg.preprocess(x, "caffe").contiguous(memory_format=torch.channels_last)
    rows = []
    names = {i: n for n, i in vgg.LAYERS.items()}
    for i, layer in enumerate(net):
        inp = h.detach().requires_grad_(True)

        def fwd(layer=layer, inp=inp):
            with torch.no_grad(), autocast(precision):
                return layer(inp)

        def fwd_bwd(layer=layer, inp=inp):
            with autocast(precision):
                y = layer(inp)
            y.float().sum().backward()

        label = f"{i}: {type(layer).__name__}" + (
            f" ({names[i + 1].replace('relu', 'conv')})" if i + 1 in names else ""
        )
        rows.append((label, timed(fwd, reps), timed(fwd_bwd, reps)))
        with torch.no_grad():
            h = layer(h)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "RDKIT_VGG_WEIGHTS" not in os.environ and VGG_FILE.is_file():
        os.environ["RDKIT_VGG_WEIGHTS"] = str(VGG_FILE)
    os.environ["RDKIT_VGG_PREPROCESSING"] = "caffe"
    torch.manual_seed(0)
    if DEV_NPZ.is_file():
        with np.load(DEV_NPZ) as f:
            pixels = f["x"][: args.batch]
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0
    machine = machine_summary(threads=torch.get_num_threads())
    out = [f"Machine: {machine}; batch {args.batch} of 32x32, medians of {args.reps} repetitions.", ""]
    out += ["## One step, by part (ms)", "", "| part | fp32 NCHW | fp32 channels-last | bf16 channels-last |"]
    out.append("|---|---|---|---|")
    cols = [step_breakdown(x, p, cl, args.reps) for p, cl in (("fp32", False), ("fp32", True), ("bf16", True))]
    for key in cols[0]:
        out.append(f"| {key} | " + " | ".join(f"{c[key]:.1f}" for c in cols) + " |")
    print("\n".join(out), flush=True)
    out += ["", "## VGG layers up to relu3_3, channels-last (ms)", ""]
    out += ["| layer | fp32 fwd | fp32 fwd+bwd | bf16 fwd | bf16 fwd+bwd |", "|---|---|---|---|---|"]
    fp32, bf16 = layer_breakdown(x, "fp32", args.reps), layer_breakdown(x, "bf16", args.reps)
    for (name, f1, b1), (_, f2, b2) in zip(fp32, bf16):
        out.append(f"| {name} | {f1:.1f} | {b1:.1f} | {f2:.1f} | {b2:.1f} |")
    tot = [sum(r[k] for r in rows) for rows in (fp32, bf16) for k in (1, 2)]
    out.append("| total | " + " | ".join(f"{v:.1f}" for v in tot) + " |")
    out += ["", f"Command: `python benchmarks/vgg_profile.py {shlex.join(argv if argv is not None else sys.argv[1:])}`"]
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
