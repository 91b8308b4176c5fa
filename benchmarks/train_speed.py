"""Training throughput: the toolkit's step against a plain hand-written PyTorch loop on the same batches.

For each recipe (default conv-mse, conv-hybrid, factorized) it builds:

- toolkit: ``rdkit_ae.training.optim.build_training`` + ``TrainStep`` plus the
  trainer's per-step bookkeeping on the CPU (loss sums kept on-tensor, one
  finiteness check per step), exactly what ``train()`` runs per batch;
- plain: the same nn.Modules (encoder, quantizer or EntropyBottleneck,
  decoder, frozen VGG) with the same initial weights, called directly, a
  hand-written loss and the optimisers written out as in CompressAI's
  examples/train.py (main Adam + aux Adam on the quantiles);
- for ``factorized`` also CompressAI's own ``FactorizedPrior(N, M)`` with its
  ``RateDistortionLoss`` and the two Adams, for reference (4 stages where the
  zoo recipe has 3, so it is not the like-for-like comparison).

Steps are timed one by one, the implementations interleaved step by step
(each runs the same batch, in rotating order, so a noisy neighbour hits all of
them alike); the figures are medians and the overhead is
median(toolkit) / median(plain). Data loading is not in the step;
the toolkit's batch assembly (gather, float conversion, augmentation) is
reported on its own line.

Run from the repository root, on a quiet machine:

    python benchmarks/train_speed.py                      # full: batch 128, 5 rounds x 20 steps
    python benchmarks/train_speed.py --steps 3 --rounds 1 # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdkit_ae.machine import machine_info, machine_summary

REPO = Path(__file__).resolve().parents[1]
DEV_NPZ = REPO.parent / "shared" / "data" / "cifar10-lossless" / "dev.npz"
VGG_FILE = REPO.parent / "shared" / "models" / "vgg16-caffe-features-conv1_1-conv4_3.pth"


def make_batches(n_batches: int, batch: int, seed: int) -> tuple[list[torch.Tensor], float]:
    """CIFAR-size training batches through the toolkit's dataset (random crops, flips, jitter).

    Returns the batches and the median milliseconds it took to assemble one.
    """
    from rdkit_ae.data.datasets import ImageDataset, train_batches
    from rdkit_ae.data.sources import ImageSet

    if DEV_NPZ.is_file():
        with np.load(DEV_NPZ) as f:
            x = f["x"]
    else:
        print(f"note: {DEV_NPZ} not found; using random pixels", file=sys.stderr)
        x = np.random.default_rng(seed).integers(0, 256, (max(batch * 4, 512), 32, 32, 3), dtype=np.uint8)
    ds = ImageDataset(ImageSet("bench", x), 32, train=True, hflip=True, color_jitter=0.1, seed=seed)
    out, times = [], []
    epoch = 0
    while len(out) < n_batches:
        for idx in train_batches(ds, batch, epoch, seed):
            if len(idx) < batch or len(out) >= n_batches:
                continue
            ds.set_epoch(epoch)
            t = time.perf_counter()
            out.append(ds.__getitems__(idx))
            times.append(time.perf_counter() - t)
        epoch += 1
    return out, statistics.median(times) * 1e3


# -- the toolkit ------------------------------------------------------------------
class Toolkit:
    def __init__(self, recipe):
        from rdkit_ae.training.optim import TrainStep, build_training

        self.model, self.objective, opt, aux_opt, self.schedule = build_training(recipe, "cpu", steps_per_epoch=1000)
        self.step = TrainStep(self.model, self.objective, opt, aux_opt, float(recipe.train["clip_grad"]))
        n = len(self.objective.names) + 1 + (aux_opt is not None)
        self.acc = torch.zeros(n)
        self.per_step_schedule = self.schedule.interval == "step"

    def __call__(self, x: torch.Tensor) -> None:
        # What Trainer._train_epoch does per batch on the CPU (sync_every = 1).
        self.acc += self.step(x)
        if self.per_step_schedule:
            self.schedule.step()
        if bool((~torch.isfinite(self.acc)).any()):
            raise FloatingPointError("non-finite loss in the benchmark")


# -- plain loops --------------------------------------------------------------------
def _adam(params, cfg):
    o = cfg["optimizer"]
    return torch.optim.Adam(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])


class PlainFixedRate:
    """conv-mse / conv-hybrid: encoder -> quantizer -> decoder, MSE (+ beta * normalised VGG feature MSE)."""

    def __init__(self, toolkit_model, recipe):
        self.g_a = copy.deepcopy(toolkit_model.g_a)
        self.q = copy.deepcopy(toolkit_model.latent_codec)
        self.g_s = copy.deepcopy(toolkit_model.g_s)
        params = [*self.g_a.parameters(), *self.q.parameters(), *self.g_s.parameters()]
        self.opt = _adam(params, recipe.train)
        self.vgg = None
        for entry in recipe.losses:
            if entry["name"] == "vgg-perceptual":
                from rdkit_ae.plugins import vgg

                layers = entry.get("layers", ["relu1_2", "relu2_2", "relu3_3"])
                self.idx = [vgg.LAYERS[n] for n in layers]
                self.vgg = vgg.load_features(max(self.idx), None, "cpu")
                self.pre = vgg.resolve_preprocessing(None)
                self.beta = entry["weight"]
                self.preprocess = vgg.preprocess
                self.every, self.calls = int(entry.get("every", 1)), 0
                self.fraction = float(entry.get("batch_fraction", 1.0))
                precision = vgg.resolve_precision(entry.get("precision", "fp32"), torch.device("cpu"))
                self.bf16 = precision == "bf16"
        for m in (self.g_a, self.q, self.g_s):
            m.train()

    def features(self, x):
        h = self.preprocess(x, self.pre).contiguous(memory_format=torch.channels_last)
        feats = []
        for i, layer in enumerate(self.vgg):
            h = layer(h)
            if i in self.idx:
                feats.append(h)
        return feats

    def __call__(self, x):
        x_hat = self.g_s(self.q(self.g_a(x))["y_hat"])
        loss = F.mse_loss(x_hat, x)
        if self.vgg is not None and self.calls % self.every == 0:
            n = max(1, math.ceil(self.fraction * x.size(0)))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                with torch.no_grad():
                    target = self.features(x[:n])
                pred = self.features(x_hat[:n])
            perc = 0.0
            for p, t in zip(pred, target):
                p, t = p.float(), t.float()
                perc = perc + F.mse_loss(p, t) / t.pow(2).mean().clamp_min(1e-12)
            loss = loss + self.beta * self.every * perc
        if self.vgg is not None:
            self.calls += 1
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class PlainFactorized:
    """factorized: the same g_a, EntropyBottleneck and g_s; MSE + lambda * bpp; main and aux Adam."""

    def __init__(self, toolkit_model, recipe):
        self.g_a = copy.deepcopy(toolkit_model.g_a)
        self.eb = copy.deepcopy(toolkit_model.latent_codec.entropy_bottleneck)
        self.g_s = copy.deepcopy(toolkit_model.g_s)
        self.lmbda = next(e["weight"] for e in recipe.losses if e["name"] == "rate")
        mods = (self.g_a, self.eb, self.g_s)
        main = [p for m in mods for n, p in m.named_parameters() if not n.endswith("quantiles")]
        self.opt = _adam(main, recipe.train)
        self.aux_opt = torch.optim.Adam([self.eb.quantiles], lr=recipe.train["aux_lr"])
        for m in mods:
            m.train()

    def __call__(self, x):
        N, _, H, W = x.shape
        self.opt.zero_grad(set_to_none=True)
        self.aux_opt.zero_grad(set_to_none=True)
        y_hat, lik = self.eb(self.g_a(x))
        x_hat = self.g_s(y_hat)
        bpp = torch.log(lik).sum() / (-math.log(2) * N * H * W)
        loss = F.mse_loss(x_hat, x) + self.lmbda * bpp
        loss.backward()
        self.opt.step()
        aux = self.eb.loss()
        aux.backward()
        self.aux_opt.step()


class CompressAIReference:
    """CompressAI's FactorizedPrior(N, M) + RateDistortionLoss + two Adams (examples/train.py)."""

    def __init__(self, recipe):
        from compressai.losses import RateDistortionLoss
        from compressai.models import FactorizedPrior

        enc = recipe["encoder"]
        self.net = FactorizedPrior(enc["N"], enc["M"]).train()
        main = [p for n, p in self.net.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in self.net.named_parameters() if n.endswith(".quantiles")]
        self.opt = torch.optim.Adam(main, lr=recipe.train["optimizer"]["lr"])
        self.aux_opt = torch.optim.Adam(aux, lr=recipe.train["aux_lr"])
        self.criterion = RateDistortionLoss(lmbda=0.01)

    def __call__(self, x):
        self.opt.zero_grad()
        self.aux_opt.zero_grad()
        out = self.criterion(self.net(x), x)
        out["loss"].backward()
        self.opt.step()
        aux = self.net.aux_loss()
        aux.backward()
        self.aux_opt.step()


def bench_recipe(name: str, batches: list[torch.Tensor], steps: int, rounds: int, warmup: int, seed: int) -> dict:
    from rdkit_ae.recipe import load_recipe

    recipe = load_recipe(name)
    torch.manual_seed(seed)
    toolkit = Toolkit(recipe)
    impls: dict[str, object] = {"toolkit": toolkit}
    if recipe["quantizer"]["name"] == "factorized-entropy":
        impls["plain"] = PlainFactorized(toolkit.model, recipe)
        impls["compressai FactorizedPrior"] = CompressAIReference(recipe)
    else:
        impls["plain"] = PlainFixedRate(toolkit.model, recipe)
    times: dict[str, list[list[float]]] = {k: [[] for _ in range(rounds)] for k in impls}
    for fn in impls.values():
        for x in batches[:warmup]:
            fn(x)
    keys = list(impls)
    for r in range(rounds):
        for i in range(steps):
            # Every implementation runs each batch back to back, the order rotating per step,
            # so load from other processes hits all of them alike.
            x = batches[(r * steps + i) % len(batches)]
            k = r * steps + i
            for key in keys[k % len(keys) :] + keys[: k % len(keys)]:
                t = time.perf_counter()
                impls[key](x)
                times[key][r].append(time.perf_counter() - t)
    # Median over rounds of the round's mean step: a per-step median would hide a loss
    # computed on every k-th step only (vgg-perceptual's `every`).
    med = {k: statistics.median(statistics.fmean(r) for r in v) for k, v in times.items()}
    low = {k: min(min(r) for r in v) for k, v in times.items()}
    return {
        "recipe": name,
        "median_s": med,
        "min_s": low,
        "ratio": med["toolkit"] / med["plain"],
        "ratio_of_minimums": low["toolkit"] / low["plain"],
        "images_per_s": {k: batches[0].size(0) / v for k, v in med.items()},
        "steps": {k: sum(len(r) for r in v) for k, v in times.items()},
    }


def perceptual_section(args: argparse.Namespace) -> tuple[dict | None, bool, str]:
    """benchmarks/perceptual_speed.py in a child process: (figures, zoo conv-hybrid within the limit, tables)."""
    with tempfile.TemporaryDirectory() as tmp:
        js, md = Path(tmp) / "perceptual.json", Path(tmp) / "perceptual.md"
        cmd = [sys.executable, str(Path(__file__).with_name("perceptual_speed.py")), "--json", str(js)]
        cmd += ["--markdown", str(md), "--batch", str(args.batch), "--seed", str(args.seed)]
        cmd += ["--steps", str(args.perceptual_steps), "--rounds", str(args.perceptual_rounds)]
        cmd += ["--threads", str(torch.get_num_threads())]
        if subprocess.run(cmd).returncode != 0 or not js.is_file():
            print("perceptual comparison failed", file=sys.stderr)
            return None, False, ""
        res, text = json.loads(js.read_text()), md.read_text()
    # conv-hybrid-fast is the zoo recipe that promises the limit; conv-hybrid (bf16 where native) is reported beside it
    ratios = res["here"]["ratio_to_mse"]
    for name in ("conv-hybrid (zoo settings)", "conv-hybrid-fast (zoo settings)"):
        if ratios.get(name) is not None:
            print(f"  {name} / conv-mse = {ratios[name]:.2f}")
    fast = ratios.get("conv-hybrid-fast (zoo settings)")
    ok = fast is None or fast <= args.perceptual_limit
    if fast is not None:
        print(f"  conv-hybrid-fast: {'ok' if ok else 'OVER'}, limit {args.perceptual_limit}")
    return res, ok, "\n\n" + text.rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["conv-mse", "conv-hybrid", "factorized"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16, help="timed steps per implementation per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=1.05, help="largest acceptable toolkit/plain ratio")
    ap.add_argument("--perceptual-limit", type=float, default=4.0, help="largest conv-hybrid-fast / conv-mse")
    ap.add_argument("--no-perceptual", action="store_true", help="skip the conv-hybrid speed options comparison")
    ap.add_argument("--perceptual-steps", type=int, default=8, help="perceptual comparison: steps per round")
    ap.add_argument("--perceptual-rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--markdown", type=Path, default=None, help="also write a markdown table here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if "RDKIT_VGG_WEIGHTS" not in os.environ and VGG_FILE.is_file():
        os.environ["RDKIT_VGG_WEIGHTS"] = str(VGG_FILE)
        os.environ.setdefault("RDKIT_VGG_PREPROCESSING", "caffe")
    n_batches = max(args.warmup, args.steps) + args.steps
    batches, data_ms = make_batches(n_batches, args.batch, args.seed)
    machine = machine_summary(threads=torch.get_num_threads())
    print(f"machine: {machine}")
    print(f"batch {args.batch} of 32x32, {args.rounds} rounds x {args.steps} steps per implementation (medians)")
    print(f"toolkit batch assembly (gather + float + flip + jitter): {data_ms:.2f} ms per batch (not in the step)")
    results = []
    for name in args.recipes:
        res = bench_recipe(name, batches, args.steps, args.rounds, args.warmup, args.seed)
        results.append(res)
        for key, sec in res["median_s"].items():
            print(f"  {name:12s} {key:28s} {sec * 1e3:9.2f} ms/step  {res['images_per_s'][key]:9.1f} img/s")
        verdict = "ok" if res["ratio"] <= args.limit else "OVER"
        print(
            f"  {name:12s} toolkit / plain = {res['ratio']:.3f} ({verdict}, limit {args.limit}); "
            f"ratio of fastest steps {res['ratio_of_minimums']:.3f} (a large gap between the two means a noisy machine)"
        )
    perc, perc_ok, perc_md = None, True, ""
    if not args.no_perceptual:
        perc, perc_ok, perc_md = perceptual_section(args)
    rows = ["| recipe | implementation | ms/step | images/s | toolkit / plain |", "|---|---|---|---|---|"]
    for res in results:
        for key, sec in res["median_s"].items():
            ratio = f"{res['ratio']:.3f}" if key == "toolkit" else ""
            rows.append(f"| {res['recipe']} | {key} | {sec * 1e3:.1f} | {res['images_per_s'][key]:.0f} | {ratio} |")
    table = "\n".join(rows)
    table += perc_md
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            f"Machine: {machine}; batch {args.batch}; ms/step = median over {args.rounds} rounds of the mean of "
            f"{args.steps} steps (toolkit / plain), {args.perceptual_rounds} x {args.perceptual_steps} "
            f"(perceptual comparison). Measured {time.strftime('%Y-%m-%d')}.\n\n{table}\n\n"
            f"Command: `python benchmarks/train_speed.py {shlex.join(argv if argv is not None else sys.argv[1:])}`\n"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "machine_info": machine_info(),
                    "batch": args.batch,
                    "data_ms": data_ms,
                    "results": results,
                    "perceptual": perc,
                },
                indent=2,
            )
        )
    return 0 if perc_ok and all(r["ratio"] <= args.limit for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
