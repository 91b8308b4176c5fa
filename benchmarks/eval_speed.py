"""Evaluation throughput: rdkit-ae's evaluator vs CompressAI's FactorizedPrior loop, same modules, same batches.

    python benchmarks/eval_speed.py                       # untrained `factorized`, 500 CIFAR images, batch 64
    python benchmarks/eval_speed.py --checkpoint runs/x/best.pt --repeats 7
    python benchmarks/eval_speed.py --images 64 --repeats 2   # a quick check

For every repeat (interleaved, so machine load drifts affect both alike) it times
- baseline: what ``compressai.models.FactorizedPrior.compress`` / ``decompress`` do,
  written out on the model's own modules: ``g_a`` -> ``entropy_bottleneck.compress``
  -> ``entropy_bottleneck.decompress`` -> ``g_s(...).clamp_(0, 1)``, per batch;
- ours: :func:`rdkit_ae.evaluation.evaluate` with the bit-exact check off; the figure
  compared is the compress + decompress time it records per batch (its
  ``model.compress``/``model.decompress`` calls), and its whole wall time
  (with metrics) is printed too, as is one run with the check on.
Prints medians in images/s and the ratio ours / baseline (target >= 0.9).
An untrained model codes many more bits than a trained one; pass a checkpoint
for representative figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rdkit_ae.machine import machine_summary

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"


def load_model(checkpoint: str | None):
    from rdkit_ae.checkpoint import load_model as load
    from rdkit_ae.model import build_model

    if checkpoint:
        model, _, _ = load(checkpoint)
    else:
        model = build_model("factorized").eval()
        model.update(force=True)
    if not hasattr(model.latent_codec, "entropy_bottleneck"):
        raise SystemExit("this benchmark compares factorized-entropy models (an EntropyBottleneck latent codec)")
    return model


def baseline_pass(model, batches) -> float:
    """FactorizedPrior.compress/decompress on the same modules; returns seconds."""
    eb = model.latent_codec.entropy_bottleneck
    total = 0.0
    with torch.no_grad():
        for x in batches:
            t0 = time.perf_counter()
            y = model.g_a(x)
            strings = eb.compress(y)
            shape = y.size()[-2:]
            y_hat = eb.decompress(strings, shape)
            model.g_s(y_hat).clamp_(0, 1)
            total += time.perf_counter() - t0
    return total


def ours_pass(model, images, batch_size: int, check: bool) -> tuple[float, float]:
    """(compress + decompress seconds recorded by evaluate, evaluate's wall seconds)."""
    from rdkit_ae.evaluation.evaluator import evaluate

    t0 = time.perf_counter()
    res = evaluate(model, images, batch_size=batch_size, check_exact=check, container=False)
    wall = time.perf_counter() - t0
    codec = sum(r["encoding_time"] + r["decoding_time"] for r in res.records)
    return codec, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a factorized checkpoint (default: the untrained zoo recipe)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a .npz with uint8 x (N, 32, 32, 3)")
    ap.add_argument("--images", type=int, default=500, help="the last N images of --data")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rdkit_ae.data.sources import ImageSet, load_images, to_tensor

    source = load_images(args.data, "all")
    images = source.subset(np.arange(len(source))[-args.images :])
    if images.array is None:
        raise SystemExit("--data must be an array source (.npz) so every batch has one size")
    model = load_model(args.checkpoint)
    # The baseline gets the same contiguous float batches the evaluator builds.
    batches = [
        to_tensor(images.array[i : i + args.batch_size]).contiguous() for i in range(0, len(images), args.batch_size)
    ]
    n = len(images)

    baseline_pass(model, batches[:1])  # warm-up (allocator, first-call overheads)
    ours_pass(model, ImageSet("warm", images.array[: args.batch_size]), args.batch_size, False)
    base_s, ours_s, wall_s = [], [], []
    for _ in range(args.repeats):
        base_s.append(baseline_pass(model, batches))
        codec, wall = ours_pass(model, images, args.batch_size, False)
        ours_s.append(codec)
        wall_s.append(wall)
    _, checked_wall = ours_pass(model, images, args.batch_size, True)

    base = n / statistics.median(base_s)
    ours = n / statistics.median(ours_s)
    print(f"machine: {machine_summary(threads=torch.get_num_threads())}")
    print(
        f"model: {args.checkpoint or 'factorized (untrained zoo recipe)'}; {n} images of {images.array.shape[1]}x"
        f"{images.array.shape[2]} in batches of {args.batch_size}; {args.repeats} repeats (medians)"
    )
    print(f"CompressAI FactorizedPrior loop (g_a, EB compress/decompress, g_s): {base:8.1f} images/s")
    print(f"rdkit evaluate: compress + decompress                             : {ours:8.1f} images/s")
    print(
        "rdkit evaluate: whole call (metrics, no check)                    :"
        f" {n / statistics.median(wall_s):8.1f} images/s"
    )
    print(f"rdkit evaluate: whole call with the bit-exact check (one run)     : {n / checked_wall:8.1f} images/s")
    print(f"ratio ours / CompressAI (compress + decompress): {ours / base:.3f}x (target >= 0.9)")


if __name__ == "__main__":
    main()
