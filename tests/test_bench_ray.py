"""`rdkit bench --executor ray`: the same sweep as Ray tasks on a real local cluster started here.

The cluster is bound to 127.0.0.1, has 2 CPUs, no dashboard and no usage
reporting, and is shut down at the end of the module.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bench import SPEC, TINY_CONV, StandInTrainer, write_spec
from test_bench_parallel import MODELS_ONLY, Recording, without_timings
from test_hostile_support import assert_one_line_error, run_cli
from typer.testing import CliRunner

from rdkit_ae.bench import run_sweep
from rdkit_ae.bench.executors import InProcess
from rdkit_ae.errors import RecipeError

ray = pytest.importorskip("ray")
from rdkit_ae.bench.ray_executor import CONNECT_TIMEOUT_S, RayCluster, check_address  # noqa: E402  (needs ray)


@pytest.fixture(scope="module")
def cluster():
    before = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    # The workers import the stand-in trainers from this folder.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, before["PYTHONPATH"]) if p)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class Dying(StandInTrainer):
    """4 bits: a recipe error; 8 bits: the task's worker dies (every attempt, counted in a file)."""

    def __call__(self, recipe, **kw):
        bits = recipe["quantizer"]["bits"]
        if bits == 4:
            raise RecipeError("quantizer.bits=4 is not allowed here")
        if bits == 8:
            attempts = kw["out"].parent.parent / "attempts"
            with open(attempts, "a") as f:
                f.write("x")
            os._exit(3)
        return super().__call__(recipe, **kw)


def test_ray_tasks_give_the_in_process_results_with_num_cpus_threads(cluster, tmp_path, data):
    spec = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV))
    # One thread each: float sums in training round the same way only on the same thread count.
    here = run_sweep(spec, tmp_path / "here", train_fn=StandInTrainer(), executor=InProcess(threads=1))
    there = run_sweep(spec, tmp_path / "ray", train_fn=Recording(), executor=RayCluster(threads=1))
    assert here.trained == there.trained == 3 and not there.failures
    read = lambda res: without_timings(json.loads((res.out_dir / "results.json").read_text()))  # noqa: E731
    assert read(here) == read(there)
    names = lambda res: sorted(p.parent.name for p in (res.out_dir / "runs").glob("*/done.json"))  # noqa: E731
    assert names(here) == names(there)  # the same cache keys
    seen = [json.loads(p.read_text()) for p in (there.out_dir / "runs").glob("*/train/seen.json")]
    assert len(seen) == 3 and all(s["pid"] != os.getpid() for s in seen)
    assert all(s["torch_threads"] == 1 and s["OMP_NUM_THREADS"] == s["MKL_NUM_THREADS"] == "1" for s in seen)


def test_a_failed_point_and_a_dead_worker_are_reported_by_point(cluster, tmp_path, data):
    spec = write_spec(tmp_path, MODELS_ONLY.format(tiny=TINY_CONV))
    out = tmp_path / "out"
    res = run_sweep(spec, out, train_fn=Dying(), executor=RayCluster(threads=1, max_retries=1))
    assert res.failures[0] == "conv-mse [quantizer.bits=4]: training failed: quantizer.bits=4 is not allowed here"
    assert res.failures[1].startswith("conv-mse [quantizer.bits=8]: training failed: its worker failed")
    assert (out / "runs" / "attempts").read_text() == "xx"  # Ray retried the task once
    assert [p.label for p in res.curves["conv-mse"]["points"]] == ["quantizer.bits=2"]
    retry = run_sweep(spec, out, train_fn=StandInTrainer(), executor=RayCluster(threads=1))
    assert retry.trained == 2 and not retry.failures and len(retry.curves["conv-mse"]["points"]) == 3


def test_cli_executor_ray_uses_the_running_cluster(cluster, tmp_path, data):
    from rdkit_ae.cli import app

    body = '[data]\neval = { path = "data/d.npz", stop = 8 }\n[classical]\nwebp = [10, 40, 70, 90]\njpeg = [30, 90]\n'
    spec = write_spec(tmp_path, body)
    result = CliRunner().invoke(app, ["bench", str(spec), "--out", str(tmp_path / "o"), "--executor", "ray"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Ray tasks on a local Ray cluster, 1 CPU(s) each" in text and "BD vs WebP" in text
    assert ray.is_initialized()  # the test's cluster: used, and left running


# -- addresses where no cluster answers (issue #20) ----------------------------------------------------
CODECS_ONLY = '[data]\neval = { path = "data/d.npz", stop = 4 }\n[classical]\nwebp = [40, 90]\njpeg = [30, 90]\n'


def _silent_port() -> socket.socket:
    """A port that accepts connections (the kernel completes them) and never answers: no Ray there."""
    server = socket.socket()
    server.bind(("0.0.0.0", 0))  # Ray connects to this machine's address, not to 127.0.0.1
    server.listen(16)
    return server


def test_a_closed_address_fails_at_once_in_one_line_naming_it(tmp_path, data):
    spec = write_spec(tmp_path, CODECS_ONLY)
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        run = run_cli(tmp_path, "bench", spec, "--out", tmp_path / "o", "--executor", "ray", "--address", address)
        assert_one_line_error(run, f"cannot reach Ray at {address}", "Connection refused")
        assert run.seconds < 60, run.seconds  # ray.init alone retried for over 4 minutes
    run = run_cli(tmp_path, "bench", spec, "--out", tmp_path / "o", "--address", "127.0.0.1:65536")
    assert_one_line_error(run, "Ray address '127.0.0.1:65536'")


def test_an_address_that_does_not_answer_fails_within_the_bound(tmp_path, data):
    spec = write_spec(tmp_path, CODECS_ONLY)
    with _silent_port() as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        run = run_cli(tmp_path, "bench", spec, "--out", tmp_path / "o", "--address", address, timeout=120)
    assert_one_line_error(run, f"no Ray cluster answered at {address}", f"within {CONNECT_TIMEOUT_S:g} s")
    assert run.seconds < 60, run.seconds


def test_ctrl_c_stops_the_wait_at_once(tmp_path, data):
    spec = write_spec(tmp_path, CODECS_ONLY)
    with _silent_port() as server, (tmp_path / "out").open("w+") as out:
        args = ["bench", spec, "--out", tmp_path / "o", "--address", f"127.0.0.1:{server.getsockname()[1]}"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen([sys.executable, "-m", "rdkit_ae", *map(str, args)], stdout=out, stderr=out, env=env)
        try:
            start = time.monotonic()
            while "sweep 'spec'" not in (tmp_path / "out").read_text() and time.monotonic() - start < 120:
                time.sleep(0.2)  # the sweep has started: the executor connects next
            time.sleep(3)
            assert proc.poll() is None, (tmp_path / "out").read_text()
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            rc = proc.wait(timeout=20)
            stopped_after = time.monotonic() - sent
        finally:
            proc.kill()
    assert rc == 130 and stopped_after < 5, (rc, stopped_after, (tmp_path / "out").read_text())
    assert "interrupted" in (tmp_path / "out").read_text()


def test_a_running_cluster_passes_the_check_quickly(cluster):
    start = time.monotonic()
    check_address(ray.get_runtime_context().gcs_address)
    assert time.monotonic() - start < 10
