"""`rdkit bench --executor ray`: the same sweep as Ray tasks on a real local cluster started here.

The cluster is bound to 127.0.0.1, has 2 CPUs, no dashboard and no usage
reporting, and is shut down at the end of the module.
"""

import json
import os
from pathlib import Path

import pytest
from test_bench import SPEC, TINY_CONV, StandInTrainer, write_spec
from test_bench_parallel import MODELS_ONLY, Recording, without_timings
from typer.testing import CliRunner

from rdkit_ae.bench import run_sweep
from rdkit_ae.bench.executors import InProcess
from rdkit_ae.errors import RecipeError

ray = pytest.importorskip("ray")
from rdkit_ae.bench.ray_executor import RayCluster  # noqa: E402  (needs ray)


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
