"""``rdkit bench --jobs N``: the sweep's jobs in N processes on this machine, each with its share of the cores.

A ProcessPoolExecutor with the 'spawn' start method (a fresh interpreter,
no copy of this process's threads or torch state) whose initializer sets
the thread variables and torch's pools before the job's modules load, so N
jobs of T threads use N x T cores and none is starved by oversubscription.
N is at most the number of cores: ``--jobs 10000`` once started a worker
process per point.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from rdkit_ae.bench.driver import Driver
from rdkit_ae.bench.jobs import JobContext, TrainFn
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan
from rdkit_ae.bench.progress import Reporter
from rdkit_ae.bench.spec_parallel import MAX_THREADS_PER_JOB
from rdkit_ae.bench.worker import JobReturn, run_job
from rdkit_ae.errors import RdkitError
from rdkit_ae.worker_setup import available_cores, init_worker


def default_threads(jobs: int, cores: int | None = None) -> int:
    """Threads per job so that ``jobs`` jobs together use the cores this process was given."""
    return max(1, (cores or available_cores()) // jobs)


class _ProcessPool:
    """The Pool the driver feeds: spawn-started workers, a queue for their progress, their pids for Ctrl-C."""

    def __init__(self, jobs: int, threads: int, train_fn: TrainFn | None):
        self.jobs, self.threads, self.train_fn = jobs, threads, train_fn
        self.ctx = multiprocessing.get_context("spawn")
        self.queue = self.ctx.Queue()
        self.pids: set[int] = set()
        self.executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.jobs, mp_context=self.ctx, initializer=init_worker, initargs=(self.threads, self.queue)
        )

    def capacity(self) -> int:
        return self.jobs

    def submit(self, job: Any, index: int) -> Future[JobReturn]:
        try:
            return self.executor.submit(run_job, job, index, self.train_fn)
        except BrokenProcessPool:
            # A worker died (its jobs are reported as failed): carry on with new workers.
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._new_executor()
            return self.executor.submit(run_job, job, index, self.train_fn)

    def events(self) -> list[tuple[Any, ...]]:
        events: list[tuple[Any, ...]] = []
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                return events
            if event[0] == "start":
                self.pids.add(event[2])
            events.append(event)

    def interrupt(self, running: list[Future[JobReturn]], force: bool) -> None:
        self.events()  # the pids of jobs that started since the last poll
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL if force else signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass  # already gone

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.queue.close()
        self.queue.join_thread()


@dataclass
class LocalProcesses:
    """Up to ``jobs`` jobs at once (at most one per core) in worker processes, ``threads`` threads each.

    ``threads`` defaults to cores // jobs.
    """

    jobs: int
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1 or (self.threads is not None and self.threads < 1):
            raise RdkitError(f"--jobs and --threads-per-job must be positive, got {self.jobs} and {self.threads}")
        if self.threads is not None and self.threads > MAX_THREADS_PER_JOB:
            raise RdkitError(f"--threads-per-job must be at most {MAX_THREADS_PER_JOB}, got {self.threads}")

    @property
    def workers(self) -> int:
        """The worker processes: ``jobs``, but no more than the cores (more would only take turns on them)."""
        return min(self.jobs, available_cores())

    @property
    def threads_per_job(self) -> int:
        return self.threads or default_threads(self.workers)

    def describe(self) -> str:
        capped = f" (--jobs {self.jobs} capped at the cores)" if self.workers < self.jobs else ""
        return f"{self.workers} local job(s){capped} x {self.threads_per_job} thread(s)"

    def run(self, plan: SweepPlan, ctx: JobContext, reporter: Reporter, deadline: Deadline) -> PlanResults:
        try:
            pickle.dumps(ctx.train_fn)
        except Exception as exc:
            raise RdkitError(f"train_fn must be picklable to run jobs in other processes: {exc}") from None
        cores = available_cores()
        if self.workers < self.jobs:
            reporter.note(f"--jobs {self.jobs} is more than the {cores} core(s) here: {self.workers} run at once")
        if self.workers * self.threads_per_job > cores:
            reporter.note(f"{self.describe()} is more than the {cores} core(s) here: the jobs will slow each other")
        pool = _ProcessPool(self.workers, self.threads_per_job, ctx.train_fn)
        try:
            return Driver(plan, pool, reporter, deadline).run()
        finally:
            pool.close()
