"""`rdkit bench --jobs N`: jobs in local worker processes give the same results, cache and resume as one job.

The stand-in trainer (test_bench.StandInTrainer: the recipe's real model and
a few real optimiser steps) runs in spawn-started workers; the subclasses
here are module-level so the workers can unpickle them.
"""

import json
import os
import time

import pytest
import torch
from test_bench import SPEC, TINY_CONV, StandInTrainer, write_spec
from typer.testing import CliRunner

from rdkit_ae.bench import SpecError, load_spec, run_sweep
from rdkit_ae.bench.executors import InProcess
from rdkit_ae.bench.local_executor import LocalProcesses, default_threads
from rdkit_ae.errors import RecipeError

MODELS_ONLY = SPEC.replace("webp = [0, 20, 50, 80]\njpeg = [20, 80]", "webp = [50]")
TIMINGS = {"encoding_time", "decoding_time", "train_seconds"}


class Recording(StandInTrainer):
    """Writes what the job saw (its process, thread limits) into its run folder, then trains."""

    def __call__(self, recipe, **kw):
        seen = {
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
            **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        }
        kw["out"].mkdir(parents=True, exist_ok=True)
        (kw["out"] / "seen.json").write_text(json.dumps(seen))
        return super().__call__(recipe, **kw)


class Failing(StandInTrainer):
    """4 bits: a recipe error (a failed point); 8 bits: the worker process dies."""

    def __call__(self, recipe, **kw):
        if recipe["quantizer"]["bits"] == 4:
            raise RecipeError("quantizer.bits=4 is not allowed here")
        if recipe["quantizer"]["bits"] == 8:
            os._exit(3)
        return super().__call__(recipe, **kw)


class Interrupted(StandInTrainer):
    """Ctrl-C while training the 4-bit point."""

    def __call__(self, recipe, **kw):
        if recipe["quantizer"]["bits"] == 4:
            kw["out"].mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt
        return super().__call__(recipe, **kw)


class Slow(StandInTrainer):
    def __call__(self, recipe, **kw):
        time.sleep(3.0)
        return super().__call__(recipe, **kw)


def without_timings(entries):
    return [{**e, "results": {k: v for k, v in e["results"].items() if k not in TIMINGS}} for e in entries]


def test_two_jobs_give_the_results_of_one_with_their_share_of_threads(tmp_path, data):
    spec = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV))
    one = run_sweep(spec, tmp_path / "one", train_fn=StandInTrainer(), executor=InProcess(threads=1))
    two = run_sweep(spec, tmp_path / "two", train_fn=Recording(), executor=LocalProcesses(jobs=2, threads=1))
    assert one.trained == two.trained == 3 and not two.failures and not two.left
    read = lambda res, name: json.loads((res.out_dir / name).read_text())  # noqa: E731
    assert without_timings(read(one, "results.json")) == without_timings(read(two, "results.json"))
    assert read(one, "bd_rate.json") == read(two, "bd_rate.json")
    # The same cache keys: the same run folders and cached files.
    files = lambda res: sorted(p.relative_to(res.out_dir).as_posix() for p in (res.out_dir / "runs").rglob("*.json"))  # noqa: E731
    assert [f for f in files(one) if "seen" not in f] == [f for f in files(two) if "seen" not in f]
    assert sorted(p.name for p in (one.out_dir / "classical").iterdir()) == sorted(
        p.name for p in (two.out_dir / "classical").iterdir()
    )

    # Each job ran in a worker process with one thread everywhere.
    seen = [json.loads(p.read_text()) for p in (two.out_dir / "runs").glob("*/train/seen.json")]
    assert len(seen) == 3 and all(s["pid"] != os.getpid() for s in seen)
    assert all(s["torch_threads"] == 1 and s["OMP_NUM_THREADS"] == s["MKL_NUM_THREADS"] == "1" for s in seen)


def test_failed_and_killed_points_are_reported_while_the_others_finish(tmp_path, data):
    spec = write_spec(tmp_path, MODELS_ONLY.format(tiny=TINY_CONV))
    out = tmp_path / "out"
    res = run_sweep(spec, out, train_fn=Failing(), executor=LocalProcesses(jobs=2, threads=1))
    by_point = {f.split(":")[0]: f for f in res.failures}
    assert by_point["conv-mse [quantizer.bits=4]"] == (
        "conv-mse [quantizer.bits=4]: training failed: quantizer.bits=4 is not allowed here"
    )
    assert "its worker failed" in by_point["conv-mse [quantizer.bits=8]"]
    # Nothing dropped silently: every point is either in the curves or failed, and the reports say so.
    done = [p.label for p in res.curves["conv-mse"]["points"]]
    assert sorted(done + [k.split(" ")[1][1:-1] for k in by_point]) == [f"quantizer.bits={b}" for b in (2, 4, 8)]
    assert "FAILED: conv-mse [quantizer.bits=8]" in (out / "bd_rate.md").read_text()
    assert [p.label for p in res.curves["WebP"]["points"]] == ["q=50"]

    retry = run_sweep(spec, out, train_fn=StandInTrainer())  # the cache is the same whatever runs the jobs
    # A killed worker breaks the pool: a point still in flight then fails too (on a busy machine, after its
    # training was cached), so the retry trains at most the failed points and finishes all of them.
    assert not retry.failures and 1 <= retry.trained <= len(by_point)
    assert len(retry.curves["conv-mse"]["points"]) == 3


def test_an_interrupted_parallel_sweep_resumes(tmp_path, data):
    spec = write_spec(tmp_path, MODELS_ONLY.format(tiny=TINY_CONV))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, train_fn=Interrupted(), executor=LocalProcesses(jobs=2, threads=1))
    finished = {p.parent.name for p in (out / "runs").glob("*/done.json")}
    assert len(finished) < 3  # the 4-bit point was cut short
    res = run_sweep(spec, out, train_fn=StandInTrainer())
    assert res.trained == 3 - len(finished) and not res.failures
    assert [p.label for p in res.curves["conv-mse"]["points"]] == [f"quantizer.bits={b}" for b in (2, 4, 8)]
    assert {p.parent.name for p in (out / "runs").glob("*/done.json")} >= finished


def test_the_sweep_time_budget_leaves_unstarted_jobs_for_the_next_run(tmp_path, data):
    spec = write_spec(tmp_path, MODELS_ONLY.format(tiny=TINY_CONV).replace("webp = [50]", "webp = false"))
    spec.write_text(spec.read_text().replace('anchor = "WebP"', 'anchor = "conv-mse"'))
    out = tmp_path / "out"
    # 3 s: the first two trainings start at once and take longer; nothing starts after them.
    res = run_sweep(spec, out, train_fn=Slow(), executor=LocalProcesses(jobs=2, threads=1), time_budget=3 / 60)
    assert res.trained == 2 and not res.failures and res.curves["conv-mse"]["points"] == []
    assert sorted(res.left) == [
        "eval conv-mse [quantizer.bits=2]",
        "eval conv-mse [quantizer.bits=4]",
        "eval conv-mse [quantizer.bits=8]",
        "train conv-mse [quantizer.bits=8]",
    ]
    assert "NOT RUN (the sweep's time budget ran out): " in (out / "bd_rate.md").read_text()
    # In this process too, no job starts after the budget.
    serial = run_sweep(spec, out, train_fn=Slow(), executor=InProcess(), time_budget=1e-6)
    assert serial.trained == 0 and len(serial.left) == 6  # not even a cached job starts
    rest = run_sweep(spec, out, train_fn=StandInTrainer())
    assert rest.trained == 1 and not rest.left and len(rest.curves["conv-mse"]["points"]) == 3
    with pytest.raises(SpecError, match="time budget must be a positive number of minutes, got 0"):
        run_sweep(spec, out, time_budget=0)


def test_default_threads_share_the_cores():
    assert default_threads(2, cores=16) == 8 and default_threads(3, cores=16) == 5 and default_threads(4, cores=2) == 1
    assert LocalProcesses(jobs=2, threads=3).describe() == "2 local job(s) x 3 thread(s)"


def test_cli_jobs_and_the_parallel_table(tmp_path, data):
    from rdkit_ae.cli import app

    body = '[data]\neval = { path = "data/d.npz", stop = 8 }\n[classical]\nwebp = [10, 40, 70, 90]\njpeg = [30, 90]\n'
    spec = write_spec(tmp_path, body)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "o"), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "2 local job(s) x " in " ".join(result.output.split()) and "BD vs WebP" in result.output
    serial = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "s")])
    assert serial.exit_code == 0 and "in this process" in " ".join(serial.output.split())
    read = lambda d: without_timings(json.loads((tmp_path / d / "results.json").read_text()))  # noqa: E731
    assert read("o") == read("s")

    bad = runner.invoke(app, ["bench", str(spec), "--executor", "slurm"])
    assert bad.exit_code == 1 and bad.output.strip() == "error: --executor must be local or ray, got 'slurm'"
    from rdkit_ae.commands.bench import _executor

    table = load_spec(write_spec(tmp_path, body + "[parallel]\njobs = 2\nthreads_per_job = 1\n", "par.toml"))
    assert table.parallel == {"jobs": 2, "threads_per_job": 1}
    assert _executor(table, None, None, None, None) == LocalProcesses(jobs=2, threads=1)
    assert _executor(table, 1, None, None, None) == InProcess(threads=1)  # the command line wins
    assert _executor(table, None, 2, "ray", "auto").describe() == "Ray tasks on auto, 2 CPU(s) each"
    for extra, message in [
        ("jobs = 0", "[parallel].jobs must be a positive integer, got 0"),
        ('executor = "slurm"', "[parallel].executor must be local or ray, got 'slurm'"),
        ("threads = 2", "[parallel]: unknown key(s) threads; allowed: jobs, threads_per_job, executor, address"),
    ]:
        with pytest.raises(SpecError, match=None) as info:
            load_spec(write_spec(tmp_path, body + f"[parallel]\n{extra}\n", "bad.toml"))
        assert message in str(info.value)
