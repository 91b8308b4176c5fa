"""A sweep's plan: its jobs in order, with their progress tasks, and what running them gave.

Every executor (in this process, local processes, Ray) runs the same plan
and fills the same :class:`PlanResults`, in plan order whatever order the
jobs finish in, so the reports do not depend on how the sweep was run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rdkit_ae.bench.jobs import CodecJob, EvalJob, ImagesRef, PointResult, TrainJob
from rdkit_ae.bench.progress import Task
from rdkit_ae.bench.spec import SweepSpec, effective_env
from rdkit_ae.bench.training import TrainOutcome
from rdkit_ae.evaluation.classic import get_codec


@dataclass
class SweepPlan:
    """A sweep's jobs with their progress tasks: codec points first (quick, and they give the anchor early)."""

    codecs: list[tuple[Task, CodecJob]]
    # train, then evaluate what it trained: once, or at each operating point of a variable-rate model
    points: list[tuple[Task, TrainJob, tuple[Task, ...]]]
    eval_images: ImagesRef
    batch_size: int
    device: str

    @property
    def tasks(self) -> list[Task]:
        return [t for t, _ in self.codecs] + [t for train, _, evs in self.points for t in (train, *evs)]

    def eval_jobs(self, job: TrainJob, trained: TrainOutcome) -> list[EvalJob]:
        """The evaluations of what ``job`` trained, in the order of its point's evaluation tasks."""
        return EvalJob.all_after(job, trained, self.eval_images, self.batch_size, self.device)


@dataclass
class PlanResults:
    points: list[PointResult] = field(default_factory=list)
    trained: int = 0
    failures: list[str] = field(default_factory=list)  # failed points (left out of the curves; retried next run)
    left: list[str] = field(default_factory=list)  # steps not started within the sweep's time budget


@dataclass(frozen=True)
class Deadline:
    """The sweep's wall-clock budget: no job starts after ``at`` (time.monotonic()); None means no budget."""

    at: float | None = None

    @classmethod
    def after(cls, minutes: float | None) -> Deadline:
        return cls(None if minutes is None else time.monotonic() + 60.0 * minutes)

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


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
        job = TrainJob(
            p.curve, p.label, p.recipe, p.overrides, p.budget, spec.seed, *train, env, str(out), resume, p.rates
        )
        budget_s = 60.0 * float(p.budget.get("time_budget", 1.0))
        t_train = Task("train", f"train {p.curve} [{p.label}]", budget_s)
        t_evals = tuple(Task("eval", f"eval {p.curve} [{label}]", n_eval * 0.01) for label in job.eval_labels)
        points.append((t_train, job, t_evals))
    return SweepPlan(codecs, points, eval_images, spec.eval_batch_size, spec.device)
