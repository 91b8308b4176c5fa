"""Does ``torch.compile`` pay for the float networks of a codec? Eager against compiled, start-up included.

For each checkpoint, the analysis ``g_a`` (encode) and synthesis ``g_s``
(decode) run at one thread on a Kodak-sized input (768x512 and its latent),
eager and after ``torch.compile`` (inductor, default mode): the median of
``--repeats`` calls, the compile time (the first call), the images a process
must code before the compile pays for itself, and the largest difference of
the outputs. The exact integer networks (``h_s``, context) are left out on
purpose: their float64 sums must stay in the order that keeps them exact.

Inductor caches compiled code on disk: by default the run starts from an
empty cache (a first ``rdkit decompress`` on a machine); ``--cache-dir DIR``
twice in a row gives the warm case (every later process). Within one
process, later compiles reuse what earlier ones built.

    OMP_NUM_THREADS=1 python benchmarks/compile_speed.py --checkpoint runs/fast-vr/best.pt \\
        --out benchmarks/results/compile_speed.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``fn(x)`` over ``repeats`` calls (after one warm-up call)."""
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(name: str, net: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    eager = timed(net, x, repeats)
    compiled = torch.compile(net)
    t0 = time.perf_counter()
    compiled(x)
    start = time.perf_counter() - t0
    fast = timed(compiled, x, repeats)
    gain = eager - fast
    return {
        "network": name,
        "eager_ms": 1000 * eager,
        "compiled_ms": 1000 * fast,
        "compile_s": start,
        "break_even_images": start / gain if gain > 0 else float("inf"),
        "max_abs_diff": (compiled(x) - net(x)).abs().max().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True, help="repeatable")
    ap.add_argument("--size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache-dir", default=None, help="inductor's cache (default: a new empty one, the cold case)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    # Inductor looks this variable up at every compile (torch._inductor.runtime.cache_dir_utils.cache_dir).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="inductor-cold-")
    torch.set_num_threads(1)
    from rdkit_ae.codec import Codec
    from rdkit_ae.machine import machine_summary
    from rdkit_ae.training.state import run_name

    rows = []
    for ck in args.checkpoint:
        model = Codec.load(ck).model
        torch.manual_seed(0)
        x = torch.rand(1, 3, *args.size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = model.g_a(x)
            for name, net, inp in (("g_a", model.g_a, x), ("g_s", model.g_s, y)):
                rows.append({"checkpoint": run_name(ck), **compare(name, net, inp, args.repeats)})
    lines = [
        "| checkpoint | network | eager (ms) | compiled (ms) | compile (s) | images to break even | max difference |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['checkpoint']} | {r['network']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | "
            f"{r['compile_s']:.1f} | {r['break_even_images']:,.0f} | {r['max_abs_diff']:.1e} |"
            for r in rows
        ),
        "",
        f"{args.size[1]}x{args.size[0]} input, median of {args.repeats} calls, one thread, torch.compile defaults, "
        f"inductor cache {'given (--cache-dir)' if args.cache_dir else 'empty at start (cold)'}; "
        f"{machine_summary(threads=1)}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
