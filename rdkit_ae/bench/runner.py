"""Running a sweep: plan its jobs, run them in order (resuming from the cache), hand the results to the reports.

Caching: a point's run folder is ``OUT/runs/<key>`` where ``key`` hashes the
resolved recipe digest, the training data (by content), the budget, the seed
and the [env] values; ``done.json`` marks a finished training. Evaluations
and codec sweeps are cached beside them, keyed by the evaluation images'
content. An interrupted sweep therefore resumes where it stopped.

The jobs are plain picklable objects (see :mod:`rdkit_ae.bench.jobs`):
:func:`run_serial` runs a :class:`SweepPlan` in this process, and an executor
that runs it in other processes needs only the plan, a context per process
and the same result type.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from rdkit_ae.bench.images import content_hash, load_data, overlap_notes, training_data
from rdkit_ae.bench.jobs import (
    CodecJob,
    EvalJob,
    ImagesRef,
    JobContext,
    PointResult,
    TrainFn,
    TrainJob,
    external_points,
)
from rdkit_ae.bench.progress import Reporter, SilentReporter, Task
from rdkit_ae.bench.report import Curves, write_reports
from rdkit_ae.bench.spec import SpecError, SweepSpec, effective_env, load_spec
from rdkit_ae.evaluation.classic import get_codec


@dataclass
class SweepResult:
    out_dir: Path
    curves: Curves  # name -> {"kind", "description", "points": [PointResult]}
    bd: dict
    files: dict[str, Path]
    trained: int  # points trained in this call (not taken from the cache)
    notes: list[str]
    failures: list[str]  # points whose training failed (left out of the curves; retried on the next run)


@dataclass
class SweepPlan:
    """A sweep's jobs with their progress tasks: codec points first (quick, and they give the anchor early)."""

    codecs: list[tuple[Task, CodecJob]]
    points: list[tuple[Task, TrainJob, Task]]  # train, then evaluate what it trained
    eval_images: ImagesRef
    batch_size: int
    device: str

    @property
    def tasks(self) -> list[Task]:
        return [t for t, _ in self.codecs] + [t for train, _, ev in self.points for t in (train, ev)]


@dataclass
class PlanResults:
    points: list[PointResult] = field(default_factory=list)
    trained: int = 0
    failures: list[str] = field(default_factory=list)


def plan_sweep(spec: SweepSpec, out: Path, eval_images: ImagesRef, train: tuple[str, str], resume: bool) -> SweepPlan:
    """The jobs of ``spec`` writing into ``out``; ``train`` is (train data argument, its content key)."""
    n_eval = eval_images.count
    codecs = []
    for sweep in spec.codecs:
        label = get_codec(sweep.codec).label
        for q in sweep.qualities:
            codec = CodecJob(sweep.codec, q, sweep.options, eval_images, str(out), resume)
            codecs.append((Task("codec", f"{label} q={q}", n_eval * 0.004), codec))
    env = effective_env(spec)
    points = []
    for p in spec.points:
        job = TrainJob(p.curve, p.label, p.recipe, p.overrides, p.budget, spec.seed, *train, env, str(out), resume)
        budget_s = 60.0 * float(p.budget.get("time_budget", 1.0))
        t_train = Task("train", f"train {p.curve} [{p.label}]", budget_s)
        t_eval = Task("eval", f"eval {p.curve} [{p.label}]", n_eval * 0.01)
        points.append((t_train, job, t_eval))
    return SweepPlan(codecs, points, eval_images, spec.eval_batch_size, spec.device)


def _start(reporter: Reporter, ctx: JobContext, task: Task) -> JobContext:
    reporter.start(task)
    return replace(ctx, progress=functools.partial(reporter.advance, task))


def _finish(reporter: Reporter, task: Task, cached: bool) -> None:
    task.cached = cached
    reporter.finish(task, cached)


def run_serial(plan: SweepPlan, ctx: JobContext, reporter: Reporter) -> PlanResults:
    """Run every job of ``plan`` in this process, in order."""
    results = PlanResults()
    reporter.begin(plan.tasks)
    for task, codec in plan.codecs:
        point = codec.run(_start(reporter, ctx, task))
        results.points.append(point)
        _finish(reporter, task, point.cached)
    for t_train, train, t_eval in plan.points:
        trained = train.run(_start(reporter, ctx, t_train))
        if trained.failure is not None:
            # One diverging point (e.g. a NaN loss) must not sink a long sweep: record it, go on.
            results.failures.append(f"{train.curve} [{train.label}]: training failed: {trained.failure}")
            reporter.note(f"FAILED {t_train.label}: {trained.failure}")
        results.trained += trained.trained
        _finish(reporter, t_train, trained.cached)
        if trained.failure is None:
            job = EvalJob.after(train, trained, plan.eval_images, plan.batch_size, plan.device)
            point = job.run(_start(reporter, ctx, t_eval))
            results.points.append(point)
            _finish(reporter, t_eval, point.cached)
        else:
            reporter.start(t_eval)  # keeps the step count and the ETA right
            _finish(reporter, t_eval, False)
    return results


def _check_device(spec: SweepSpec) -> None:
    """A device this machine lacks fails now, not after the trainings."""
    device = spec.device
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise SpecError(f"{spec.path}: [eval].device {device} is not available on this machine")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SpecError(f"{spec.path}: [eval].device mps is not available on this machine")


def _curves(spec: SweepSpec, points: list[PointResult]) -> Curves:
    curves: Curves = {}
    for sweep in spec.codecs:
        curves[get_codec(sweep.codec).label] = {"kind": "classical", "description": "", "points": []}
    for ext in spec.externals:
        curves[ext["name"]] = {"kind": "external", "description": ext["description"], "points": external_points(ext)}
    for model in spec.models:
        curves[model.name] = {"kind": "learned", "description": model.points[0].recipe.description, "points": []}
    for p in points:
        curves[p.curve]["points"].append(p)
        if p.kind == "classical":
            curves[p.curve]["description"] = p.description
    for c in curves.values():
        c["points"].sort(key=lambda p: p.summary["bpp"])
    return curves


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = True,
    train_fn: TrainFn | None = None,
    reporter: Reporter | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write its reports into ``out`` (default ``bench/<spec name>``).

    ``train_fn`` defaults to :func:`rdkit_ae.training.train` and is called as
    ``train_fn(recipe, data=..., out=run_dir, overrides=[], seed=..., quiet=True,
    evaluate=False, **budget)``; it must return an object with
    ``best_checkpoint`` and/or ``last_checkpoint``. ``resume=False`` retrains
    and re-evaluates every point (``--fresh``).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    _check_device(spec)
    out = (Path(out) if out is not None else Path("bench") / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or SilentReporter()
    notes = list(spec.skipped)

    val_fraction = spec.budget.get("val_fraction", 0.1)
    images = load_data(spec.eval_data, val_fraction, spec.seed)
    eval_ref = ImagesRef(spec.eval_data, val_fraction, spec.seed, content_hash(images), len(images))
    train = ("", "")
    if spec.points:
        train = training_data(spec.train_data, out)
        notes += overlap_notes(spec.train_data, spec.eval_data, spec.base)
    for n in notes:
        reporter.note(n)

    plan = plan_sweep(spec, out, eval_ref, train, resume)
    results = run_serial(plan, JobContext({eval_ref.key: images}, train_fn, note=reporter.note), reporter)

    curves = _curves(spec, results.points)
    files = write_reports(out, spec, curves, notes + [f"FAILED: {f}" for f in results.failures])
    bd = json.loads(files["bd_rate.json"].read_text(encoding="utf-8"))
    return SweepResult(out, curves, bd, files, results.trained, notes, results.failures)
