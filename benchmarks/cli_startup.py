"""Time `rdkit --help` (target: under 1.5 s): commands import torch/CompressAI lazily.

python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    exe = shutil.which("rdkit")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "rdkit_ae", "--help"]
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"`{'rdkit' if exe else 'python -m rdkit_ae'} --help`: median {med:.3f} s over {args.runs} runs"
        f" (min {min(times):.3f}, max {max(times):.3f}); target < 1.5 s: {'OK' if med < 1.5 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
