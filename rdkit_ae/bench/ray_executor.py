"""``rdkit bench --executor ray``: the sweep's jobs as Ray tasks, on a running cluster or a local one.

Ray places the tasks (``num_cpus`` each, and that many threads inside) and
retries a task whose worker died; the driver keeps it fed with jobs whose
inputs exist. The jobs read the data and write the run folders at the paths
the driver gives them, so those paths must be on a filesystem every node
shares (each job checks that the output folder is there and fails with a
clear message if not). Needs the ``ray`` extra: ``pip install rdkit-ae[ray]``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.queue import Queue

from rdkit_ae.bench.driver import Driver
from rdkit_ae.bench.jobs import JobContext, TrainFn
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan
from rdkit_ae.bench.progress import Reporter
from rdkit_ae.bench.worker import JobReturn, run_job
from rdkit_ae.errors import RdkitError
from rdkit_ae.text import one_line
from rdkit_ae.worker_setup import available_cores

CAPACITY_EVERY_S = 5.0  # how often the cluster's CPUs are asked for (nodes may join or leave)


class _RayPool:
    def __init__(self, cluster: RayCluster, train_fn: TrainFn | None):
        self.cluster, self.train_fn = cluster, train_fn
        # The progress queue is an actor: it must not hold a CPU a job could use.
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.task = ray.remote(run_job).options(
            num_cpus=cluster.threads, max_retries=cluster.max_retries, retry_exceptions=False
        )
        self.refs: dict[Future[JobReturn], Any] = {}
        self.checked, self.cap = -CAPACITY_EVERY_S, 1

    def capacity(self) -> int:
        if time.monotonic() - self.checked >= CAPACITY_EVERY_S:
            self.checked = time.monotonic()
            cpus = ray.cluster_resources().get("CPU", 0.0)
            self.cap = max(1, int(cpus // self.cluster.threads))
        return min(self.cap, self.cluster.jobs) if self.cluster.jobs else self.cap

    def submit(self, job: Any, index: int) -> Future[JobReturn]:
        ref = self.task.remote(job, index, self.train_fn, self.cluster.threads, self.queue)
        future = ref.future()
        self.refs[future] = ref
        return future

    def events(self) -> list[tuple[Any, ...]]:
        n = self.queue.qsize()
        return self.queue.get_nowait_batch(n) if n else []

    def interrupt(self, running: list[Future[JobReturn]], force: bool) -> None:
        for future in running:
            ray.cancel(self.refs[future], force=force)


def _largest_node() -> float:
    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


@dataclass
class RayCluster:
    """Ray tasks of ``threads`` CPUs each on the cluster at ``address`` (None: a local cluster for the sweep).

    ``jobs`` caps how many run at once (default: as many as the cluster's
    CPUs allow); ``max_retries``: how often Ray retries a task whose worker
    died. When Ray is already initialised in this process, that connection
    is used and left open.
    """

    address: str | None = None
    threads: int = 1
    jobs: int | None = None
    max_retries: int = 1

    def describe(self) -> str:
        where = self.address or "a local Ray cluster"
        return f"Ray tasks on {where}, {self.threads} CPU(s) each"

    def _connect(self) -> bool:
        """Connect (or start a local cluster); True when this call did, so it shuts it down too."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, configure_logging=False)
            else:
                # Only this machine: nothing to reach from elsewhere, no dashboard.
                ray.init(
                    address="local",
                    num_cpus=available_cores(),
                    include_dashboard=False,
                    configure_logging=False,
                    _node_ip_address="127.0.0.1",
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "local"
            raise RdkitError(f"could not start or reach Ray at {where}: {one_line(exc, 300)}") from None
        return True

    def run(self, plan: SweepPlan, ctx: JobContext, reporter: Reporter, deadline: Deadline) -> PlanResults:
        if self.threads < 1 or (self.jobs is not None and self.jobs < 1):
            raise RdkitError(f"--threads-per-job and --jobs must be positive, got {self.threads} and {self.jobs}")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a sweep sends nothing anywhere by itself
        started = self._connect()
        try:
            largest = _largest_node()
            if largest < self.threads:
                message = f"no Ray node has {self.threads} CPU(s) for a task (the largest has {largest:g})"
                if started:
                    raise RdkitError(message)
                reporter.note(f"{message}: the tasks wait until the cluster grows")
            return Driver(plan, _RayPool(self, ctx.train_fn), reporter, deadline).run()
        finally:
            if started:
                ray.shutdown()
