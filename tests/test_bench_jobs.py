"""`rdkit bench` internals: whole-spec validation, stable cache keys, picklable jobs, relative report paths."""

import hashlib
import json
import multiprocessing
import pickle
from dataclasses import replace

import pytest
from test_bench import SPEC, TINY_CONV, StandInTrainer, write_spec

from rdkit_ae.bench import SpecError, load_spec, run_sweep
from rdkit_ae.bench.cache import file_sha
from rdkit_ae.bench.images import content_hash, load_data
from rdkit_ae.bench.jobs import CodecJob, EvalJob, ImagesRef, JobContext, TrainJob
from rdkit_ae.bench.runner import plan_sweep
from rdkit_ae.bench.training import TrainOutcome

GOOD = '[data]\neval = "data/d.npz"\n[classical]\nwebp = [5]\n'


@pytest.mark.parametrize(
    "extra,message",
    [
        ("[eval]\nbatch_size = 0\n", "[eval].batch_size must be a positive integer, got 0"),
        ('[eval]\nbatch_size = "64"\n', "[eval].batch_size must be a positive integer, got '64'"),
        ('[eval]\ndevice = "gpu"\n', "[eval].device must be cpu, mps, cuda or cuda:N, got 'gpu'"),
        ("[eval]\nthreads = 2\n", "[eval]: unknown key(s) threads; allowed: batch_size, device"),
        ("[budget]\nmax_steps = 2.5\n", "[budget].max_steps must be a positive integer, got 2.5"),
        ("[budget]\nval_fraction = 1.5\n", "[budget].val_fraction must be between 0 and 1, got 1.5"),
        ("[budget]\ntime_budget = true\n", "[budget].time_budget must be a positive number, got True"),
        ('[[external]]\npath = "ext.json"\ncolour = "red"\n', "[[external]] #1: unknown key(s) colour"),
        ('[[external]]\npath = "ext.json"\nname = 3\n', "[[external]] #1.name must be a non-empty string"),
        ('[[model]]\nrecipe = "conv-mse"\nname = ""\n', "[[model]] #1.name must be a non-empty string"),
        ('[[model]]\nrecipe = "conv-mse"\nset = ["nonsense"]\n', "[[model]] #1.set: override 'nonsense'"),
        (
            '[[model]]\nrecipe = "conv-mse"\nbudget = { epochs = 0 }\n',
            "[[model]] #1.budget.epochs must be a positive integer",
        ),
        ("[env]\nX = 1\n", "[env] X must be a string"),
    ],
)
def test_every_table_is_validated_with_a_one_line_error(tmp_path, data, extra, message):
    (tmp_path / "ext.json").write_text(json.dumps({"results": {"bpp": [1.0], "psnr-rgb": [30.0]}}))
    body = GOOD.replace("[data]", 'name = "x"\n[data]') + extra
    if "[[model]]" in extra:
        body = body.replace('eval = "data/d.npz"', 'eval = "data/d.npz"\ntrain = "data/d.npz"')
    spec = write_spec(tmp_path, body)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = str(info.value)
    assert text.startswith(f"{spec}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("top,message", [("name = 5\n", "name must be a non-empty string, got 5")])
def test_top_level_values_are_checked(tmp_path, data, top, message):
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(tmp_path, top + GOOD))


def test_a_bad_spec_fails_before_any_work(tmp_path, data):
    out = tmp_path / "out"
    bad = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV) + "[eval]\nbatch_size = -1\n")
    trainer = StandInTrainer()
    with pytest.raises(SpecError, match="batch_size"):
        run_sweep(bad, out, train_fn=trainer)
    # A device this machine does not have is refused before anything is trained or written.
    absent = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV) + '[eval]\ndevice = "cuda:99"\n', "absent.toml")
    with pytest.raises(SpecError, match="device cuda:99 is not available"):
        run_sweep(absent, out, train_fn=trainer)
    assert not out.exists() and trainer.calls == []


def _plan(tmp_path, body, name="spec.toml"):
    spec = load_spec(write_spec(tmp_path, body, name))
    images = load_data(spec.eval_data)
    ref = ImagesRef(spec.eval_data, 0.1, spec.seed, content_hash(images), len(images))
    return spec, plan_sweep(spec, tmp_path / "out", ref, ("train.npz", "TRAINKEY"), True)


def _legacy_key(obj):
    """The cache key formula of the first bench version: existing caches must keep their keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def test_job_keys_are_stable_and_follow_what_they_depend_on(tmp_path, data):
    body = SPEC.format(tiny=TINY_CONV)
    spec, plan = _plan(tmp_path, body)
    _, again = _plan(tmp_path, body, "copy.toml")
    keys = [j.key for _, j in plan.codecs] + [j.key for _, j, _ in plan.points]
    assert keys == [j.key for _, j in again.codecs] + [j.key for _, j, _ in again.points]
    assert len(set(keys)) == len(keys) == 6 + 3

    train = plan.points[0][1]
    assert train.key == _legacy_key(
        {"v": 1, "recipe": spec.points[0].recipe.digest(), "data": "TRAINKEY", "budget": {"max_steps": 3}, "seed": 0}
    )
    assert train.run_dir == tmp_path / "out" / "runs" / train.key[:16]
    codec = plan.codecs[0][1]
    assert codec.key == _legacy_key(
        {"v": 1, "codec": "webp", "q": 0, "opt": {}, "pillow": codec.pillow, "data": plan.eval_images.key}
    )
    assert codec.path == tmp_path / "out" / "classical" / f"webp-q0-{codec.key[:12]}.json"

    _, changed = _plan(tmp_path, body.replace("max_steps = 3", "max_steps = 4"), "changed.toml")
    assert [j.key for _, j, _ in changed.points].count(train.key) == 0
    assert [j.key for _, j in changed.codecs] == [j.key for _, j in plan.codecs]  # codecs do not train

    outcome = TrainOutcome(checkpoint="/c/last.pt", checkpoint_sha256="ab" * 32)
    ev = EvalJob.after(train, outcome, plan.eval_images, 64, "cpu")
    assert ev.key == _legacy_key({"v": 1, "ckpt": "ab" * 32, "data": plan.eval_images.key, "batch": 64})
    assert EvalJob.after(train, outcome, plan.eval_images, 32, "cpu").key != ev.key


def _run_job(blob):
    """In a fresh process: unpickle a job and run it with that process's own context."""
    job = pickle.loads(blob)
    return job.key, job.run(JobContext()).summary


def test_jobs_are_picklable_and_run_in_another_process(tmp_path, data):
    _, plan = _plan(tmp_path, SPEC.format(tiny=TINY_CONV))
    train = plan.points[0][1]
    ev = EvalJob.after(train, TrainOutcome(checkpoint="/c.pt", checkpoint_sha256="0" * 64), plan.eval_images, 8, "cpu")
    for job in (plan.codecs[0][1], train, ev):
        copy = pickle.loads(pickle.dumps(job))
        assert copy == job and copy.key == job.key and type(copy) is type(job)

    codec: CodecJob = plan.codecs[-1][1]
    here = codec.run(JobContext())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # resume=False: the other process codes the images again rather than read this one's cache.
        key, summary = pool.apply(_run_job, (pickle.dumps(replace(codec, resume=False)),))
    assert key == codec.key and here.summary["n_images"] == 12
    assert {k: summary[k] for k in ("bytes", "bpp", "psnr")} == {k: here.summary[k] for k in ("bytes", "bpp", "psnr")}


def test_train_job_runs_alone_and_its_eval_is_cached(tmp_path, data):
    _, plan = _plan(tmp_path, SPEC.format(tiny=TINY_CONV))
    train: TrainJob = pickle.loads(pickle.dumps(plan.points[0][1]))
    train.train_data = str(data)
    trainer = StandInTrainer()
    outcome = train.run(JobContext(train_fn=trainer))
    assert outcome.trained and len(trainer.calls) == 1
    assert outcome.checkpoint_sha256 == file_sha(train.run_dir / "train" / "last.pt")
    assert json.loads((train.run_dir / "done.json").read_text())["checkpoint"] == outcome.checkpoint
    again = train.run(JobContext(train_fn=trainer))
    assert again.cached and not again.trained and len(trainer.calls) == 1

    ev = EvalJob.after(train, outcome, plan.eval_images, 8, "cpu")
    first, second = ev.run(JobContext()), ev.run(JobContext())
    assert not first.cached and second.cached and first.summary == second.summary
    assert first.summary["bpp"] == 0.125  # 4x4x4 latent at 2 bits on 32x32, measured


def test_reports_name_no_absolute_paths(tmp_path, data):
    (tmp_path / "paper.json").write_text(json.dumps({"results": {"bpp": [1.0, 2.0], "psnr-rgb": [28.0, 31.0]}}))
    body = SPEC.format(tiny=TINY_CONV).replace("stop = 24", "stop = 30") + '[[external]]\npath = "paper.json"\n'
    body += '[env]\nRDKIT_TEST_PATH = { path = "data/w.bin" }\n'
    out = tmp_path / "out"
    res = run_sweep(write_spec(tmp_path, body), out, train_fn=StandInTrainer())
    assert res.notes  # the overlap warning names both data sets
    for name in ("results.csv", "results.json", "bd_rate.md", "bd_rate.json", "sweep.json"):
        assert str(tmp_path) not in (out / name).read_text(), name
    import csv

    learned = [r for r in csv.DictReader((out / "results.csv").open()) if r["kind"] == "learned"]
    assert learned and all((tmp_path / r["checkpoint"]).is_file() for r in learned)
    assert all((tmp_path / r["run_dir"] / "done.json").is_file() for r in learned)
    md = (out / "bd_rate.md").read_text()
    assert "on data/d.npz[-12:];" in md and "(data/d.npz[:30] vs data/d.npz[-12:])" in md
    assert json.loads((out / "results.json").read_text())[2]["description"] == "paper.json"
