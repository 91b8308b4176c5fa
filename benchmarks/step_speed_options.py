"""Does channels_last memory format or torch.compile speed up a CPU training step of the block model?

Builds the toolkit's training step (``build_training`` + ``TrainStep``) for
the block transform (encoder/decoder ``block``, M=48, C=64, factor 4) with a
mean-scale hyperprior, once per variant, all from the same initial weights:
``eager`` (the default), ``channels_last`` (model and batches in NHWC),
``compile`` (``torch.compile`` of the forward) and both. The variants run
interleaved (one timed round of each in turn, so a busy machine slows them
alike), and each round's time is also divided by the eager round next to it.

    python benchmarks/step_speed_options.py --threads 1 --rounds 7 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rdkit_ae.recipe import load_recipe
from rdkit_ae.training.optim import TrainStep, build_training

RECIPE = "factorized"
OVERRIDES = [
    'encoder={name="block", latent_channels=48, channels=64, factor=4}',
    'decoder={name="block"}',
    'quantizer={name="mean-scale-hyperprior", N=64, hyper_stages=1}',
    "train.batch_size=64",
    "train.clip_grad=1.0",
]


def make_step(variant: str, state: dict | None) -> tuple[TrainStep, torch.nn.Module, dict]:
    torch.manual_seed(0)
    model, objective, opt, aux_opt, _ = build_training(load_recipe(RECIPE, OVERRIDES))
    if state is not None:
        model.load_state_dict(state)
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if "compile" in variant else model
    step = TrainStep(model, objective, opt, aux_opt, clip_grad=1.0, forward=forward)
    return step, model, model.state_dict()


def batch(variant: str, n: int, size: int, i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(i)
    x = torch.rand(n, 3, size, size, generator=g)
    return x.contiguous(memory_format=torch.channels_last) if "channels_last" in variant else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--variants", default="eager,channels_last,compile,compile+channels_last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    if variants[0] != "eager":
        variants.insert(0, "eager")
    state = None
    steps = {}
    for v in variants:
        steps[v], _, st = make_step(v, state)
        state = state or st
        t0 = time.perf_counter()
        for i in range(3):  # warm-up (compilation happens here)
            steps[v](batch(v, 64, 32, i))
        print(f"{v}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            xs = [batch(v, 64, 32, 100 + i) for i in range(args.steps)]
            t0 = time.perf_counter()
            for x in xs:
                steps[v](x)
            times[v].append((time.perf_counter() - t0) / args.steps * 1000)
    base = times["eager"]
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), batch 64 of 32x32, {args.rounds} rounds")
    print("| variant | median ms/step | median ratio to eager (side by side) |")
    print("|---|---|---|")
    for v in variants:
        ratio = statistics.median(t / b for t, b in zip(times[v], base))
        print(f"| {v} | {statistics.median(times[v]):.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
