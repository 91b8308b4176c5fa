"""The job side of a parallel sweep: run one job in a worker process and hand back a picklable answer.

Whatever a job raises comes back as a message (a trainer's exception may not
survive pickling, and one failed point must not break the pool); Ctrl-C and
a training stopped by a signal come back as ``interrupted``. Progress and
notes go to the driver through a queue (anything with ``put``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from rdkit_ae import worker_setup
from rdkit_ae.bench.jobs import JobContext, TrainFn
from rdkit_ae.data.sources import ImageSet
from rdkit_ae.errors import RdkitError
from rdkit_ae.text import one_line
from rdkit_ae.training import TrainingInterrupted

# This process's loaded images, by content key: a worker that runs several
# evaluations reads the images once.
_IMAGES: dict[str, ImageSet] = {}

PROGRESS_EVERY_S = 0.5  # at most this often per job: each report is a message to the driver


@dataclass
class JobReturn:
    value: Any = None  # the job's result (PointResult or TrainOutcome)
    error: str | None = None  # why it failed
    interrupted: bool = False
    host: str = ""


class _Progress:
    """A job's progress callback: the fraction done, sent at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, events: Any, index: int):
        self.events, self.index, self.last = events, index, 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or fraction >= 1.0:
            self.last = now
            self.events.put(("advance", self.index, fraction))


def _describe(exc: BaseException) -> str:
    text = one_line(exc, 500)
    return text if isinstance(exc, RdkitError) else f"{type(exc).__name__}: {text}"


def run_job(
    job: Any, index: int, train_fn: TrainFn | None, threads: int | None = None, events: Any = None
) -> JobReturn:
    """Run ``job`` (plan task ``index``) here; ``threads`` re-applies the thread limit (a reused Ray worker)."""
    events = events if events is not None else worker_setup.EVENTS
    if threads is not None:
        worker_setup.limit_threads(threads)
    host = socket.gethostname()
    events.put(("start", index, os.getpid()))
    ctx = JobContext(_IMAGES, train_fn, progress=_Progress(events, index), note=lambda m: events.put(("note", m)))
    try:
        folder = getattr(job, "out", None) or job.run_dir  # an EvalJob knows only its point's folder
        if not os.path.isdir(folder):
            raise RdkitError(
                f"the sweep's output folder {folder} does not exist on {host}: "
                "it must be on a filesystem every node shares"
            )
        return JobReturn(job.run(ctx), host=host)
    except (KeyboardInterrupt, TrainingInterrupted):
        return JobReturn(interrupted=True, host=host)
    except Exception as exc:
        return JobReturn(error=_describe(exc), host=host)
