"""Choosing fast-vr-hybrid's perceptual weight w: how big the VGG term is next to the MSE, and what w does.

1. On a trained fast-vr checkpoint (``--checkpoint``), every trained rate: the
   mean MSE and the mean per-image VGG term (``rd-perceptual``'s ``VGG_i``) of
   its reconstructions of the held-out images, and their ratio: w times it is
   how much of the distortion the perceptual term would be at the start.
2. Short trainings of fast-vr-hybrid (``--epochs``, the cosine completes) at
   each ``--weights`` value (0 is the plain ``rd`` loss), evaluated at the
   middle rate on the same held-out images (model forward with rounding, no
   entropy coding): PSNR, HaarPSI, the perceptual share of the distortion
   ``w VGG / (MSE + w VGG)`` and the step cost.

Train on dev.npz 0-2499, evaluate on 2500-2999 (as benchmarks/perceptual_study.py).

    python benchmarks/perceptual_weight.py --checkpoint runs/fast-vr/best.pt \\
        --out benchmarks/results/perceptual_weight.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
RECIPE = REPO / "benchmarks" / "fast-vr-hybrid.toml"
VGG_FILE = REPO.parent / "shared" / "models" / "vgg16-caffe-features-conv1_1-conv4_3.pth"


def measure(model, loss, x, rate: float) -> dict[str, float]:
    """MSE, VGG term, PSNR and HaarPSI of ``model``'s reconstructions of ``x`` at rate position ``rate``."""
    import piq
    import torch

    from rdkit_ae.registry import create

    model.eval()
    model.latent_codec.set_rate(index=rate)
    with torch.no_grad():
        out = model(x)
        x_hat = out["x_hat"].clamp(0, 1)
        x_hat = torch.round(x_hat * 255) / 255  # what a decoder writes
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        vgg_term = loss.perceptual(x, x_hat)
        haarpsi = piq.haarpsi(x_hat, x, data_range=1.0, reduction="none")
        rate = create("loss", "rate")(x, out).item()  # estimated bpp: a larger w spends more bits at a rate index
    return {
        "bpp": rate,
        "lambda": model.latent_codec.lmbda,
        "mse": mse.mean().item(),
        "vgg": vgg_term.mean().item(),
        "ratio": (vgg_term / mse).median().item(),
        "psnr": (10 * torch.log10(1 / mse)).mean().item(),
        "haarpsi": haarpsi.mean().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a trained fast-vr checkpoint for part 1")
    ap.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.003, 0.01, 0.03])
    ap.add_argument("--epochs", type=int, default=12, help="epochs of each short training [default: 12, ~420 steps]")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for part 2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEV_NPZ)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown here")
    args = ap.parse_args()
    if "RDKIT_VGG_WEIGHTS" not in os.environ and VGG_FILE.is_file():
        os.environ["RDKIT_VGG_WEIGHTS"] = str(VGG_FILE)
        os.environ.setdefault("RDKIT_VGG_PREPROCESSING", "caffe")
    import torch

    from rdkit_ae.checkpoint import load_model
    from rdkit_ae.machine import machine_summary
    from rdkit_ae.registry import create
    from rdkit_ae.training import train

    torch.set_num_threads(args.threads)
    dev = np.load(args.data)["x"]
    x = torch.from_numpy(dev[2500:3000]).permute(0, 3, 1, 2).float() / 255
    loss = create("loss", "rd-perceptual").eval()
    lines = [f"Held-out: dev.npz 2500-2999 (500 images). Machine: {machine_summary(threads=args.threads)}.", ""]
    if args.checkpoint is not None:
        model, _, _ = load_model(args.checkpoint)
        lines += [
            f"1. `{args.checkpoint}` at each trained rate (VGG / MSE: median over images):",
            "",
            "| rate | lambda | PSNR dB | MSE | VGG term | VGG / MSE |",
            "|---|---|---|---|---|---|",
        ]
        for t in range(len(model.latent_codec.lambdas)):
            m = measure(model, loss, x, t)
            lines.append(
                f"| {t} | {m['lambda']:.4f} | {m['psnr']:.2f} | {m['mse']:.2e} | {m['vgg']:.4f} | {m['ratio']:.0f} |"
            )
        lines.append("")
    lines += [
        f"2. fast-vr-hybrid, {args.epochs} epochs of dev.npz 0-2499 per weight"
        + (f" ({', '.join(args.overrides)})" if args.overrides else "")
        + ", at the middle rate (index 3):",
        "",
        "| w | est. bpp | PSNR dB | HaarPSI | perceptual share | ms/step (wall / steps) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        train_npz = Path(tmp) / "train.npz"
        np.savez(train_npz, x=dev[:2500])
        for w in args.weights:
            t0 = time.perf_counter()
            res = train(
                str(RECIPE), str(train_npz), Path(tmp) / f"w{w:g}", epochs=args.epochs, threads=args.threads,
                overrides=[f"loss.rd-perceptual.perceptual_weight={w}", *args.overrides], quiet=True, evaluate=False,
            )  # fmt: skip
            ms = (time.perf_counter() - t0) / max(res.steps, 1) * 1e3
            model, _, _ = load_model(Path(tmp) / f"w{w:g}" / "best.pt")
            m = measure(model, loss, x, 3)
            share = w * m["vgg"] / (m["mse"] + w * m["vgg"])
            lines.append(f"| {w:g} | {m['bpp']:.3f} | {m['psnr']:.2f} | {m['haarpsi']:.4f} | {share:.0%} | {ms:.0f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + f"\nCommand: `python benchmarks/perceptual_weight.py {' '.join(_argv())}`\n")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
