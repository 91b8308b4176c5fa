"""Driving a plan through a pool of workers: what may run now, and what each finished job means.

The pool (a ProcessPoolExecutor, or Ray) does the scheduling; the driver
only keeps it fed with jobs whose inputs exist (an evaluation waits for its
training), never more than the pool can start at once, so a job that is
submitted is a job that runs and a sweep-level deadline can leave the rest
for the next run. Results are kept in plan order; a job that fails or whose
worker dies is reported by its point while the others go on.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Protocol

from rdkit_ae.bench.jobs import CodecJob, EvalJob, PointResult, TrainJob
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan
from rdkit_ae.bench.progress import Reporter, Task
from rdkit_ae.bench.training import TrainOutcome
from rdkit_ae.bench.worker import JobReturn
from rdkit_ae.text import one_line

POLL_S = 0.2  # how often progress is drained while jobs run


class Pool(Protocol):
    def capacity(self) -> int:
        """How many jobs can run at once now."""
        ...

    def submit(self, job: Any, index: int) -> Future[JobReturn]: ...

    def events(self) -> list[tuple[Any, ...]]:
        """Progress reports received since the last call: ("start", i, pid), ("advance", i, f), ("note", text)."""
        ...

    def interrupt(self, running: list[Future[JobReturn]], force: bool) -> None:
        """Ask the running jobs to stop (a training saves a checkpoint first); ``force``: kill them."""
        ...


@dataclass
class _Step:
    task: Task
    job: CodecJob | TrainJob | EvalJob
    slot: int  # the codec's or the point's position in the plan


class Driver:
    def __init__(self, plan: SweepPlan, pool: Pool, reporter: Reporter, deadline: Deadline):
        self.plan, self.pool, self.reporter, self.deadline = plan, pool, reporter, deadline
        self.index = {id(t): i for i, t in enumerate(plan.tasks)}
        self.ready: deque[_Step] = deque(_Step(t, j, i) for i, (t, j) in enumerate(plan.codecs))
        self.ready.extend(_Step(t, j, i) for i, (t, j, _) in enumerate(plan.points))
        self.running: dict[Future[JobReturn], _Step] = {}
        self.codec_points: list[PointResult | None] = [None] * len(plan.codecs)
        self.eval_points: dict[int, PointResult] = {}  # by task index: plan order (several per variable-rate point)
        self.failures: list[tuple[int, str]] = []  # (task index, message): reported in plan order
        self.results = PlanResults()
        self.interrupted = False

    def run(self) -> PlanResults:
        self.reporter.begin(self.plan.tasks)
        try:
            while self.running or (self.ready and not self.interrupted):
                self._submit_ready()
                done, _ = wait(list(self.running), timeout=POLL_S, return_when=FIRST_COMPLETED)
                self._drain()
                for future in done:
                    self._settle(self.running.pop(future), future)
        except KeyboardInterrupt:
            self._stop()
            raise
        if self.interrupted:
            raise KeyboardInterrupt
        evaluated = [self.eval_points[i] for i in sorted(self.eval_points)]
        self.results.points = [p for p in self.codec_points if p is not None] + evaluated
        self.results.failures = [m for _, m in sorted(self.failures, key=lambda f: f[0])]
        return self.results

    def _submit_ready(self) -> None:
        while self.ready and not self.interrupted and len(self.running) < self.pool.capacity():
            if self.deadline.passed:
                self.results.left.extend(s.task.label for s in self.ready)
                self.results.left.extend(ev.label for _, _, evs in self._untrained_points() for ev in evs)
                self.ready.clear()
                return
            step = self.ready.popleft()
            self.reporter.start(step.task)
            self.running[self.pool.submit(step.job, self.index[id(step.task)])] = step

    def _untrained_points(self) -> list[tuple[Task, TrainJob, tuple[Task, ...]]]:
        """The points whose training is left (their evaluations are left with them), in plan order."""
        left = {id(s.task) for s in self.ready}
        return [p for p in self.plan.points if id(p[0]) in left]

    def _drain(self) -> None:
        tasks = self.plan.tasks
        running = {id(s.task) for s in self.running.values()}
        for event in self.pool.events():
            if event[0] == "advance" and id(tasks[event[1]]) in running:
                self.reporter.advance(tasks[event[1]], event[2])
            elif event[0] == "note":
                self.reporter.note(event[1])

    def _settle(self, step: _Step, future: Future[JobReturn]) -> None:
        try:
            ret = future.result()
        except Exception as exc:  # the worker died (killed, out of memory) or Ray gave up on the task
            ret = JobReturn(error=f"its worker failed ({one_line(exc, 300)}); left for the next run")
        if ret.interrupted:
            self.interrupted = True
            return
        if isinstance(step.job, TrainJob):
            self._trained(step, ret)
            return
        what = "evaluation" if isinstance(step.job, EvalJob) else "codec run"
        if ret.error is not None:
            self._failed(step.task, f"{what} failed: {ret.error}")
        else:
            if isinstance(step.job, EvalJob):
                self.eval_points[self.index[id(step.task)]] = ret.value
            else:
                self.codec_points[step.slot] = ret.value
        self._finish(step.task, ret.error is None and ret.value.cached)

    def _trained(self, step: _Step, ret: JobReturn) -> None:
        outcome: TrainOutcome | None = ret.value
        failure = ret.error if outcome is None else outcome.failure
        t_evals = self.plan.points[step.slot][2]
        if outcome is not None:
            self.results.trained += outcome.trained
        if failure is not None:
            self._failed(step.task, f"training failed: {failure}")
        self._finish(step.task, outcome is not None and outcome.cached)
        if outcome is None or failure is not None:
            for t_eval in t_evals:
                self.reporter.start(t_eval)  # keeps the step count and the ETA right
                self._finish(t_eval, False)
            return
        job = step.job
        assert isinstance(job, TrainJob)
        evals = list(zip(t_evals, self.plan.eval_jobs(job, outcome)))  # one per operating point of variable rate
        for t_eval, ev in reversed(evals):
            self.ready.appendleft(_Step(t_eval, ev, step.slot))  # its results first: the curves fill in early

    def _failed(self, task: Task, message: str) -> None:
        point = task.label.split(" ", 1)[1] if task.kind != "codec" else task.label
        self.failures.append((self.index[id(task)], f"{point}: {message}"))
        self.reporter.note(f"FAILED {task.label}: {message}")

    def _finish(self, task: Task, cached: bool) -> None:
        task.cached = cached
        self.reporter.finish(task, cached)

    def _stop(self) -> None:
        """Ctrl-C here: stop the running jobs (trainings save a checkpoint), wait for them; again: kill them."""
        self.reporter.note("interrupted: stopping the running jobs (press Ctrl-C again to kill them)")
        running = list(self.running)
        self.pool.interrupt(running, force=False)
        try:
            wait(running)
        except KeyboardInterrupt:
            self.pool.interrupt(running, force=True)
