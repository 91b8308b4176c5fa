"""How a sweep's jobs run: the Executor protocol, and the default that runs them here, one after another.

The executors that run jobs at once in other processes are
:class:`rdkit_ae.bench.local_executor.LocalProcesses` (``--jobs N``) and
:class:`rdkit_ae.bench.ray_executor.RayCluster` (``--executor ray``); every
executor fills the same :class:`PlanResults` from the same plan, and the
jobs keep their results in the same cache files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from rdkit_ae.bench.jobs import JobContext
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan
from rdkit_ae.bench.progress import Reporter, Task


class Executor(Protocol):
    def run(self, plan: SweepPlan, ctx: JobContext, reporter: Reporter, deadline: Deadline) -> PlanResults:
        """Run ``plan`` (``ctx`` is this process's context: loaded images, train_fn, notes); its results."""
        ...

    def describe(self) -> str:
        """How the jobs run, for the console and sweep.json (e.g. "2 local jobs x 1 thread")."""
        ...


def _start(reporter: Reporter, ctx: JobContext, task: Task) -> JobContext:
    reporter.start(task)
    return replace(ctx, progress=functools.partial(reporter.advance, task))


def _finish(reporter: Reporter, task: Task, cached: bool) -> None:
    task.cached = cached
    reporter.finish(task, cached)


def _left(results: PlanResults, *tasks: Task) -> None:
    results.left.extend(t.label for t in tasks)


def run_serial(plan: SweepPlan, ctx: JobContext, reporter: Reporter, deadline: Deadline = Deadline()) -> PlanResults:
    """Run every job of ``plan`` in this process, in order; none starts after ``deadline``."""
    results = PlanResults()
    reporter.begin(plan.tasks)
    for task, codec in plan.codecs:
        if deadline.passed:
            _left(results, task)
            continue
        point = codec.run(_start(reporter, ctx, task))
        results.points.append(point)
        _finish(reporter, task, point.cached)
    for t_train, train, t_evals in plan.points:
        if deadline.passed:
            _left(results, t_train, *t_evals)
            continue
        trained = train.run(_start(reporter, ctx, t_train))
        if trained.failure is not None:
            # One diverging point (e.g. a NaN loss) must not sink a long sweep: record it, go on.
            results.failures.append(f"{train.curve} [{train.label}]: training failed: {trained.failure}")
            reporter.note(f"FAILED {t_train.label}: {trained.failure}")
        results.trained += trained.trained
        _finish(reporter, t_train, trained.cached)
        evals = plan.eval_jobs(train, trained) if trained.failure is None else [None] * len(t_evals)
        for t_eval, job in zip(t_evals, evals):  # one evaluation, or one per operating point (variable rate)
            if job is None:
                reporter.start(t_eval)  # keeps the step count and the ETA right
                _finish(reporter, t_eval, False)
            elif deadline.passed:
                _left(results, t_eval)
            else:
                point = job.run(_start(reporter, ctx, t_eval))
                results.points.append(point)
                _finish(reporter, t_eval, point.cached)
    return results


@dataclass
class InProcess:
    """Runs the jobs in this process, one after another (``--jobs 1``, the default).

    ``threads`` (``--threads-per-job``) limits torch's threads for the
    sweep; None leaves this process's setting alone.
    """

    threads: int | None = None

    def describe(self) -> str:
        return "in this process" + (f", {self.threads} thread(s)" if self.threads else "")

    def run(self, plan: SweepPlan, ctx: JobContext, reporter: Reporter, deadline: Deadline) -> PlanResults:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return run_serial(plan, ctx, reporter, deadline)
        finally:
            torch.set_num_threads(before)
