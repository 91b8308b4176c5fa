"""Where one-thread compress / decompress time goes, stage by stage, for a checkpoint on Kodak.

Each stage is timed by wrapping the function that does it (in this process
only): the analysis ``g_a``, hyper-analysis ``h_a``, ``z`` coding (the
EntropyBottleneck), the exact integer networks (``h_s``, and the checkerboard's
context and entropy parameters), the CDF row indexes, ``y`` coding (split into
the C++ rANS calls with their pybind11 list conversions, and the Python
around them), the synthesis ``g_s``, the container, and the rest (image
conversions, guards, gain units, dequantization). Medians over images of the
median of ``--repeats`` calls.

A second table gives each network stage's multiply-accumulates (counted by
``torch.utils.flop_counter`` on the first image) and its floor: those MACs at
this machine's one-thread peak GEMM rate, measured here on 1024x1024 matrices
in the stage's dtype (float64 for the exact integer networks, float32 for
the rest). An implementation doing every multiply-accumulate of the same
model at that size cannot be faster; only fast-convolution algorithms
(Winograd, FFT), which trade multiplies for additions, could go below it.

    python benchmarks/profile_codec.py --checkpoint /work/runs/fast-vr/best.pt --rate 3 \\
        --images ../shared/data/kodak --out benchmarks/results/codec_speed/profile-fast-vr.md
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

STAGES = ("g_a", "h_a", "z coding", "h_s exact", "context exact", "indexes", "y rANS (C++)", "y coding (Python)")
STAGES += ("g_s", "container", "rest")
NETWORKS = {  # the network stages and the dtype their GEMMs run in
    "g_a": torch.float32,
    "h_a": torch.float32,
    "h_s exact": torch.float64,
    "context exact": torch.float64,
    "g_s": torch.float32,
}


class Clock:
    """Exclusive time per stage: a stage entered inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self.macs: dict[str, float] = defaultdict(float)
        self.counting = False  # count MACs per stage (one untimed pass: counting slows every op)
        self.stack: list[str] = []

    def wrap(self, stage: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            # The rANS interface also codes z: inside the z stage, its time is z's.
            inside = self.stack[-1] if self.stack and self.stack[-1] == "z coding" else stage
            self.stack.append(inside)
            counter = FlopCounterMode(display=False) if self.counting else contextlib.nullcontext()
            t0 = time.perf_counter()
            try:
                with counter:
                    return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                self.stack.pop()
                self.times[inside] += dt
                macs = counter.get_total_flops() / 2 if isinstance(counter, FlopCounterMode) else 0.0
                self.macs[inside] += macs
                if self.stack:  # exclusive: the outer stage did not spend these (nested counters see both)
                    self.times[self.stack[-1]] -= dt
                    self.macs[self.stack[-1]] -= macs

        return timed

    def reset(self) -> None:
        self.times.clear()


def instrument(codec: Any, clock: Clock) -> None:
    """Wrap the stage functions of ``codec``'s model (instance attributes and module functions)."""
    import rdkit_ae.codec.arrays as arrays
    from rdkit_ae.codec import container
    from rdkit_ae.guards import _GuardedCoder
    from rdkit_ae.plugin import gaussian as G
    from rdkit_ae.plugin.exact import IntegerNetwork

    model = codec.model
    q = model.latent_codec
    q = getattr(q, "inner", q)
    model.g_a.forward = clock.wrap("g_a", model.g_a.forward)
    model.g_s.forward = clock.wrap("g_s", model.g_s.forward)
    q.hyper.h_a.forward = clock.wrap("h_a", q.hyper.h_a.forward)
    eb = q.hyper.entropy_bottleneck
    eb.compress = clock.wrap("z coding", eb.compress)
    eb.decompress = clock.wrap("z coding", eb.decompress)
    for name, m in q.named_modules():
        if isinstance(m, IntegerNetwork):
            m.forward = clock.wrap("h_s exact" if name == "exact_h_s" else "context exact", m.forward)
    for name in ("encode_bottleneck", "decode_bottleneck"):  # this tree codes z through the same interface
        if hasattr(G, name):
            setattr(G, name, clock.wrap("z coding", getattr(G, name)))
    G.scale_indexes = clock.wrap("indexes", G.scale_indexes)
    G.encode = clock.wrap("y coding (Python)", G.encode)
    G.decode = clock.wrap("y coding (Python)", G.decode)
    gc = q.gaussian
    coder = gc.entropy_coder.inner if isinstance(gc.entropy_coder, _GuardedCoder) else gc.entropy_coder
    gc.entropy_coder.inner = _Timed(coder, clock)
    arrays.container = _TimedContainer(container, clock)  # type: ignore[assignment]


class _Timed:
    """The C++ coder with its calls timed (pybind11 list conversions included)."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner = inner
        self.encode_with_indexes = clock.wrap("y rANS (C++)", inner.encode_with_indexes)
        self.decode_with_indexes = clock.wrap("y rANS (C++)", inner.decode_with_indexes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _TimedContainer:
    def __init__(self, module: Any, clock: Clock) -> None:
        self._module = module
        self.pack = clock.wrap("container", module.pack)
        self.unpack = clock.wrap("container", module.unpack)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def profile(codec: Any, clock: Clock, images: list, repeats: int) -> dict[str, dict[str, float]]:
    """{"encode"|"decode": {stage: median ms}} over images (median of ``repeats`` per image)."""
    per: dict[str, dict[str, list[float]]] = {"encode": defaultdict(list), "decode": defaultdict(list)}
    for image in images:
        data = codec.compress(image)
        codec.decompress(data, trusted=True)
        runs: dict[str, list[dict[str, float]]] = {"encode": [], "decode": []}
        for _ in range(repeats):
            for side in ("encode", "decode"):
                clock.reset()
                t0 = time.perf_counter()
                if side == "encode":
                    data = codec.compress(image)
                else:
                    codec.decompress(data, trusted=True)
                total = time.perf_counter() - t0
                stages = {k: v for k, v in clock.times.items()}
                stages["rest"] = total - sum(stages.values())
                stages["total"] = total
                runs[side].append(stages)
        for side, rs in runs.items():
            for stage in (*STAGES, "total"):
                per[side][stage].append(statistics.median(r.get(stage, 0.0) for r in rs))
    return {side: {k: 1000 * statistics.median(v) for k, v in d.items()} for side, d in per.items()}


def count_macs(codec: Any, clock: Clock, image: Any) -> dict[str, dict[str, float]]:
    """{"encode"|"decode": {network stage: MACs}} of one image."""
    out = {}
    clock.counting = True
    try:
        for side in ("encode", "decode"):
            clock.macs.clear()
            if side == "encode":
                data = codec.compress(image)
            else:
                codec.decompress(data, trusted=True)
            out[side] = {k: v for k, v in clock.macs.items() if k in NETWORKS and v > 0}
    finally:
        clock.counting = False
    return out


def peak_gmacs(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """One thread's GEMM rate (GMAC/s) on n x n matrices of ``dtype``: the best case for any network."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return n**3 / min(times) / 1e9


def floor_table(macs: dict[str, dict[str, dict[str, float]]], peaks: dict[torch.dtype, float]) -> str:
    """Per network stage: MACs (millions) and ms at the peak rate of its dtype; the total per side."""
    names = list(macs)
    lines = ["| network stage | " + " | ".join(f"{n} encode | {n} decode" for n in names) + " |"]
    lines.append("|---" * (1 + 2 * len(names)) + "|")
    totals = {(n, side): 0.0 for n in names for side in ("encode", "decode")}
    for stage, dtype in NETWORKS.items():
        cells = []
        for n in names:
            for side in ("encode", "decode"):
                m = macs[n][side].get(stage, 0.0)
                ms = 1000 * m / (peaks[dtype] * 1e9)
                totals[n, side] += ms
                cells.append(f"{m / 1e6:,.0f} M / {ms:.1f} ms" if m else "-")
        lines.append(f"| {stage} ({str(dtype).removeprefix('torch.')}) | " + " | ".join(cells) + " |")
    cells = [f"{totals[n, side]:.1f} ms" for n in names for side in ("encode", "decode")]
    lines.append("| **floor of the networks** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    names = list(results)
    head = "| stage | " + " | ".join(f"{n} encode | {n} decode" for n in names) + " |"
    lines = [head, "|---" * (1 + 2 * len(names)) + "|"]
    for stage in (*STAGES, "total"):
        cells = []
        for n in names:
            for side in ("encode", "decode"):
                ms = results[n][side].get(stage, 0.0)
                cells.append(f"{ms:.1f}" if ms >= 0.05 or stage == "total" else "-")
        label = f"**{stage}**" if stage == "total" else stage
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True, help="repeatable")
    ap.add_argument("--rate", type=float, default=None, help="rate index of variable-rate models")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from rdkit_ae.codec import Codec
    from rdkit_ae.data.sources import read_image
    from rdkit_ae.machine import machine_summary
    from rdkit_ae.training.state import run_name

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    images = [read_image(p)[0] for p in paths]
    results, macs = {}, {}
    for ck in args.checkpoint:
        codec = Codec.load(ck)
        if args.rate is not None and codec.model.variable_rate:
            codec.set_rate(rate=args.rate)
        clock = Clock()
        instrument(codec, clock)
        name = run_name(ck)
        results[name] = profile(codec, clock, images, args.repeats)
        macs[name] = count_macs(codec, clock, images[0])
    peaks = {dtype: peak_gmacs(dtype) for dtype in (torch.float32, torch.float64)}
    text = table(results) + (
        f"\n\nms per image, median over {len(images)} Kodak images of the median of {args.repeats} calls "
        f"(`Codec.compress` / `Codec.decompress`, one thread), rate {args.rate}; {machine_summary(threads=1)}\n\n"
    )
    text += floor_table(macs, peaks) + (
        f"\n\nMACs of {paths[0].name} ({images[0].shape[1]}x{images[0].shape[0]}) per network stage, and the "
        f"time they take at this machine's one-thread peak GEMM rate: float32 {peaks[torch.float32]:.1f}, "
        f"float64 {peaks[torch.float64]:.1f} GMAC/s (1024x1024 matmul). Entropy coding and the rest come on top.\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
