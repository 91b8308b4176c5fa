"""``rdkit bench --executor ray``: the sweep's jobs as Ray tasks, on a running cluster or a local one.

Ray places the tasks (``num_cpus`` each, and that many threads inside) and
retries a task whose worker died; the driver keeps it fed with jobs whose
inputs exist. The jobs read the data and write the run folders at the paths
the driver gives them, so those paths must be on a filesystem every node
shares (each job checks that the output folder is there and fails with a
clear message if not). Needs the ``ray`` extra: ``pip install rdkit-ae[ray]``.

An address where no cluster answers fails within :data:`CONNECT_TIMEOUT_S`
in one line that names it (:func:`check_address`): ``ray.init`` itself
retries a closed port for many minutes, deaf to Ctrl-C in its C++ loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Iterator

import ray
from ray.util.queue import Queue

from rdkit_ae.bench.driver import Driver
from rdkit_ae.bench.jobs import JobContext, TrainFn
from rdkit_ae.bench.plan import Deadline, PlanResults, SweepPlan
from rdkit_ae.bench.progress import Reporter
from rdkit_ae.bench.spec_parallel import MAX_THREADS_PER_JOB
from rdkit_ae.bench.worker import JobReturn, run_job
from rdkit_ae.errors import RdkitError
from rdkit_ae.text import one_line
from rdkit_ae.worker_setup import available_cores

CAPACITY_EVERY_S = 5.0  # how often the cluster's CPUs are asked for (nodes may join or leave)
CONNECT_TIMEOUT_S = 30.0  # a cluster answers in well under a second; ray.init would retry for minutes
GCS_PORT, CLIENT_PORT = 6379, 10001  # Ray's defaults: `ray start --head` and the Ray client server


def _target(address: str) -> tuple[str, int, bool]:
    """(host, port, client) that ``ray.init(address)`` connects to; ``auto`` as Ray resolves it."""
    client = address.startswith("ray://")
    if not client:
        try:  # Ray's own resolution: RAY_ADDRESS, the latest `ray start` for "auto", localhost as the node's IP
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address(address) or address
        except (ImportError, AttributeError):
            pass  # another Ray version: the address as given
    rest = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(CLIENT_PORT if client else GCS_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, ray://HOST:PORT or auto")
    return host.strip("[]"), int(port), client


def _gcs_answers(gcs: str, deadline: float) -> bool:
    """Whether the GCS at ``gcs`` gives its cluster id before ``deadline`` (Ctrl-C still stops the wait at once)."""
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
    except ImportError:
        return True  # another Ray version: let ray.init try
    answer: list[bool] = []

    def ask() -> None:  # in C++ that holds no GIL: this thread may be left behind, blocked, when the wait ends
        try:
            answer.append(bool(GcsClient(address=gcs).cluster_id))
        except Exception:  # noqa: BLE001 - an RpcError or a timeout: no cluster there
            answer.append(False)

    with _quiet_stderr():
        thread = threading.Thread(target=ask, name="rdkit-ray-probe", daemon=True)
        thread.start()
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.1)
    return bool(answer and answer[0])


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's C++ client logs each failed attempt to stderr itself (fd 2): hidden here, so a refusal is one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within ``timeout_s``, a Ray address where no cluster answers, in one line naming it.

    A TCP connection to the address first (a closed port fails at once), then
    for a cluster's GCS address its cluster id; ``ray://`` addresses (the
    Ray client) bound their own wait once the port accepts connections.
    """
    deadline = time.monotonic() + timeout_s
    try:
        host, port, client = _target(address)
    except (ValueError, ConnectionError) as exc:
        raise RdkitError(f"Ray address {address!r}: {one_line(exc, 200)}") from None
    served = f"Ray clients at ray://HOST:{CLIENT_PORT}" if client else f"its address, HOST:{GCS_PORT}"
    hint = f"is a cluster running there? `ray start --head` prints {served}"
    where = address if f"{host}:{port}" in address else f"{address} ({host}:{port})"
    try:
        with socket.create_connection((host, port), timeout=max(1.0, min(10.0, timeout_s))):
            pass
    except OSError as exc:
        raise RdkitError(f"cannot reach Ray at {where}: {one_line(exc, 120)}; {hint}") from None
    if not client and not _gcs_answers(f"{host}:{port}", deadline):
        raise RdkitError(
            f"no Ray cluster answered at {where} within {timeout_s:g} s (the port is open, but no Ray GCS "
            f"answers there); {hint}"
        )


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
        if self.address:
            check_address(self.address)
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
        if self.threads > MAX_THREADS_PER_JOB:
            raise RdkitError(f"--threads-per-job must be at most {MAX_THREADS_PER_JOB}, got {self.threads}")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a sweep sends nothing anywhere by itself
        started = self._connect()
        try:
            largest = _largest_node()
            if largest < self.threads:
                message = f"no Ray node has {self.threads} CPU(s) for a task (the largest has {largest:g})"
                if started:
                    raise RdkitError(message)
                reporter.note(f"{message}: the tasks wait until the cluster grows")
            slots = int(ray.cluster_resources().get("CPU", 0.0) // self.threads)
            if self.jobs is not None and self.jobs > max(slots, 1):
                reporter.note(
                    f"--jobs {self.jobs}: the Ray cluster has room for {max(slots, 1)} task(s) of "
                    f"{self.threads} CPU(s) now; that many run at once (more as nodes join)"
                )
            return Driver(plan, _RayPool(self, ctx.train_fn), reporter, deadline).run()
        finally:
            if started:
                ray.shutdown()
