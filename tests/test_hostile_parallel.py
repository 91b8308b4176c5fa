"""Issue #20, the [parallel] table: thread counts torch cannot hold are one line, job counts follow the cores.

``threads_per_job = 2147483648`` gave ``Overflow when unpacking long`` in
this process and five worker-initialiser tracebacks with ``jobs = 2``;
``jobs = 10000`` started a worker process per point whatever the cores.
"""

from __future__ import annotations

import json

import pytest
from test_bench import SPEC, TINY_CONV, write_spec
from test_bench_parallel import MODELS_ONLY, Recording
from typer.testing import CliRunner

from rdkit_ae.bench import SpecError, load_spec, run_sweep
from rdkit_ae.bench.local_executor import LocalProcesses
from rdkit_ae.bench.progress import SilentReporter
from rdkit_ae.bench.spec_parallel import MAX_THREADS_PER_JOB, parallel_table
from rdkit_ae.cli import app
from rdkit_ae.errors import RdkitError
from rdkit_ae.worker_setup import available_cores

CODECS = '[data]\neval = { path = "data/d.npz", stop = 4 }\n[classical]\nwebp = [40, 90]\njpeg = [30, 90]\n'


class Notes(SilentReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.mark.parametrize("jobs", ["", "jobs = 2\n"], ids=["in-process", "two-workers"])
def test_a_thread_count_torch_cannot_hold_is_one_line(tmp_path, data, jobs):
    spec = write_spec(tmp_path, CODECS + f"[parallel]\n{jobs}threads_per_job = 2147483648\n")
    res = CliRunner().invoke(app, ["bench", str(spec), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.endswith(f"[parallel].threads_per_job must be at most {MAX_THREADS_PER_JOB}, got 2147483648"), line
    assert not (tmp_path / "o").exists()
    spec = write_spec(tmp_path, CODECS + f"[parallel]\n{jobs}threads_per_job = {MAX_THREADS_PER_JOB}\n", "ok.toml")
    assert load_spec(spec).parallel["threads_per_job"] == MAX_THREADS_PER_JOB


def test_executors_refuse_the_same_counts_from_python():
    with pytest.raises(RdkitError, match="--threads-per-job must be at most 1024, got 2147483648"):
        LocalProcesses(jobs=2, threads=2**31)
    with pytest.raises(SpecError, match="threads_per_job must be a positive integer, got True"):
        parallel_table({"threads_per_job": True}, "spec.toml")  # a boolean is not a count


def test_jobs_beyond_the_cores_run_one_worker_per_core_with_a_note(tmp_path, data):
    cores = available_cores()
    many = LocalProcesses(jobs=10000, threads=1)
    assert many.workers == cores
    assert many.describe() == f"{cores} local job(s) (--jobs 10000 capped at the cores) x 1 thread(s)"
    spec = write_spec(tmp_path, MODELS_ONLY.format(tiny=TINY_CONV))
    notes = Notes()
    res = run_sweep(spec, tmp_path / "o", train_fn=Recording(), executor=many, reporter=notes)
    assert res.trained == 3 and not res.failures
    pids = {json.loads(p.read_text())["pid"] for p in (res.out_dir / "runs").glob("*/train/seen.json")}
    assert 1 <= len(pids) <= cores
    assert f"--jobs 10000 is more than the {cores} core(s) here: {cores} run at once" in notes.notes


def test_a_spec_may_ask_for_many_jobs(tmp_path, data):
    from rdkit_ae.commands.bench import _executor

    sweep = load_spec(write_spec(tmp_path, SPEC.format(tiny=TINY_CONV) + "[parallel]\njobs = 10000\n"))
    runner = _executor(sweep, None, None, None, None)
    assert runner.workers == available_cores() and "capped at the cores" in runner.describe()
