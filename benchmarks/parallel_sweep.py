"""Parallel sweeps: the same small sweep with --jobs 1 and --jobs 2, one thread per job.

Runs ``benchmarks/parallel_sweep.toml`` (4 equal conv-mse training points)
twice from scratch through ``rdkit_ae.bench.run_sweep``: first in this
process (what ``rdkit bench --jobs 1 --threads-per-job 1`` does), then in two
worker processes (``--jobs 2 --threads-per-job 1``). It reports

- the wall-clock ratio (jobs 1 / jobs 2): what the parallel mode saves;
- the per-job training throughput (steps per second of each training, from
  its done.json): with 2 jobs of 1 thread it must stay at least 0.8x that of
  1 job of 1 thread, or the jobs are fighting over cores (oversubscription);
- whether both runs wrote the same results.json apart from timings.

Run from the repository root on a quiet machine with at least 2 cores:

    python benchmarks/parallel_sweep.py                       # the measurement
    python benchmarks/parallel_sweep.py --max-steps 3 --quick # a smoke test of the script (numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rdkit_ae.bench import load_spec, run_sweep
from rdkit_ae.bench.executors import InProcess
from rdkit_ae.bench.local_executor import LocalProcesses
from rdkit_ae.machine import machine_summary
from rdkit_ae.worker_setup import available_cores

HERE = Path(__file__).resolve().parent
TIMINGS = {"encoding_time", "decoding_time", "train_seconds"}


def _throughputs(out: Path) -> list[float]:
    """Steps per second of each training of the sweep in ``out``."""
    rates = []
    for done in sorted((out / "runs").glob("*/done.json")):
        info = json.loads(done.read_text())
        rates.append(info["steps"] / info["train_seconds"])
    return rates


def _results(out: Path) -> list[dict]:
    entries = json.loads((out / "results.json").read_text())
    return [{**e, "results": {k: v for k, v in e["results"].items() if k not in TIMINGS}} for e in entries]


def _run(spec_path: Path, out: Path, executor, max_steps: int | None, eval_images: int | None) -> float:
    spec = load_spec(spec_path)
    for point in spec.points:
        if max_steps is not None:
            point.budget["max_steps"] = max_steps
    if eval_images is not None:
        spec.eval_data.start = -eval_images
    t0 = time.perf_counter()
    res = run_sweep(spec, out, resume=False, executor=executor)
    wall = time.perf_counter() - t0
    if res.failures or res.trained != len(spec.points):
        sys.exit(f"the sweep did not train every point: {res.failures}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=HERE / "parallel_sweep.toml")
    ap.add_argument("--max-steps", type=int, default=None, help="steps per point (default: the spec's)")
    ap.add_argument("--quick", action="store_true", help="evaluate on 16 images (a smoke test of the script)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="where the two sweeps go (default: a temporary folder)")
    args = ap.parse_args()
    cores = available_cores()
    if cores < args.jobs:
        print(f"warning: {cores} core(s) for {args.jobs} jobs of 1 thread: the comparison is not meaningful")
    eval_images = 16 if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        one, many = root / "jobs-1", root / f"jobs-{args.jobs}"
        wall_1 = _run(args.spec, one, InProcess(threads=1), args.max_steps, eval_images)
        wall_n = _run(args.spec, many, LocalProcesses(jobs=args.jobs, threads=1), args.max_steps, eval_images)
        rate_1, rate_n = _throughputs(one), _throughputs(many)
        same = _results(one) == _results(many)

    per_job = statistics.mean(rate_n) / statistics.mean(rate_1)
    print(f"machine: {machine_summary()}; {cores} core(s) for this process")
    print(f"sweep {args.spec.name}: {len(rate_1)} training points, 1 thread per job")
    print(f"wall clock: --jobs 1 {wall_1:.1f} s, --jobs {args.jobs} {wall_n:.1f} s, ratio {wall_1 / wall_n:.2f}x")
    print(
        f"per-job training throughput: --jobs 1 {statistics.mean(rate_1):.2f} steps/s, "
        f"--jobs {args.jobs} {statistics.mean(rate_n):.2f} steps/s (min {min(rate_n):.2f}), ratio {per_job:.2f}"
    )
    print(f"results.json apart from timings: {'identical' if same else 'DIFFERENT'}")
    ok = per_job >= 0.8 and min(rate_n) >= 0.8 * statistics.mean(rate_1) and same
    print("PASS" if ok else "FAIL: a job lost more than 20% of its throughput, or the results differ")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
