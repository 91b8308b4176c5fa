"""Running a sweep: plan its jobs, run them (resuming from the cache), hand the results to the reports.

Caching: a point's run folder is ``OUT/runs/<key>`` where ``key`` hashes the
resolved recipe digest, the training data (by content), the budget, the seed
and the [env] values; ``done.json`` marks a finished training. Evaluations
and codec sweeps are cached beside them, keyed by the evaluation images'
content. An interrupted sweep therefore resumes where it stopped.

The jobs are plain picklable objects (see :mod:`rdkit_ae.bench.jobs`); an
executor (:mod:`rdkit_ae.bench.executors`) runs the plan: in this process by
default, in local processes (``--jobs N``) or as Ray tasks, with the same
cache keys, files and results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rdkit_ae.bench.executors import Executor, InProcess, run_serial
from rdkit_ae.bench.images import content_hash, load_data, overlap_notes, training_data
from rdkit_ae.bench.jobs import ImagesRef, JobContext, PointResult, TrainFn, external_points
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan, plan_sweep
from rdkit_ae.bench.progress import Reporter, SilentReporter
from rdkit_ae.bench.report import Curves, write_reports
from rdkit_ae.bench.spec import SpecError, SweepSpec, load_spec
from rdkit_ae.evaluation.classic import get_codec

__all__ = ["PlanResults", "SweepPlan", "SweepResult", "plan_sweep", "run_serial", "run_sweep"]


@dataclass
class SweepResult:
    out_dir: Path
    curves: Curves  # name -> {"kind", "description", "points": [PointResult]}
    bd: dict
    files: dict[str, Path]
    trained: int  # points trained in this call (not taken from the cache)
    notes: list[str]
    failures: list[str]  # points whose training failed (left out of the curves; retried on the next run)
    left: list[str] = field(default_factory=list)  # steps not started within the sweep's time budget (next run)


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
    executor: Executor | None = None,
    time_budget: float | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write its reports into ``out`` (default ``bench/<spec name>``).

    ``train_fn`` defaults to :func:`rdkit_ae.training.train` and is called as
    ``train_fn(recipe, data=..., out=run_dir, overrides=[], seed=..., quiet=True,
    evaluate=False, **budget)``; it must return an object with
    ``best_checkpoint`` and/or ``last_checkpoint``. ``resume=False`` retrains
    and re-evaluates every point (``--fresh``).

    ``executor`` runs the jobs (default :class:`InProcess`: here, one after
    another; see :mod:`rdkit_ae.bench.executors`). ``time_budget`` (minutes)
    is the whole sweep's: no job starts after it, and the steps left are in
    ``SweepResult.left`` for the next run to pick up.
    """
    if time_budget is not None and not time_budget > 0:
        raise SpecError(f"the sweep's time budget must be a positive number of minutes, got {time_budget}")
    deadline = Deadline.after(time_budget)
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
    ctx = JobContext({eval_ref.key: images}, train_fn, note=reporter.note)
    executor = executor or InProcess()
    results = executor.run(plan, ctx, reporter, deadline)

    curves = _curves(spec, results.points)
    report_notes = notes + [f"FAILED: {f}" for f in results.failures]
    if results.left:
        report_notes.append(f"NOT RUN (the sweep's time budget ran out): {', '.join(results.left)}")
    files = write_reports(out, spec, curves, report_notes, executor.describe())
    bd = json.loads(files["bd_rate.json"].read_text(encoding="utf-8"))
    return SweepResult(out, curves, bd, files, results.trained, notes, results.failures, results.left)
