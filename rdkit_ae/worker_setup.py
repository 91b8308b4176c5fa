"""A job process's set-up: its share of the cores (thread variables and torch's pools), set before torch runs.

This module imports neither torch nor numpy at the top: a process pool's
initializer is unpickled (its module imported) in the new process before it
runs, and the OpenMP, MKL and OpenBLAS runtimes read their variables when
they load, so the variables must be set before anything imports them.
"""

from __future__ import annotations

import os
import signal
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# The queue this process reports job progress to (set by the pool's initializer).
EVENTS: Any = None


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one, e.g. under taskset or Slurm)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def limit_threads(threads: int) -> None:
    """Use ``threads`` threads for OpenMP, MKL, OpenBLAS and torch's intra- and inter-op pools in this process."""
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    import torch  # here, after the variables: importing torch starts the runtimes that read them

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # the inter-op pool already started (a reused Ray worker); the intra-op limit is what counts


def init_worker(threads: int, events: Any) -> None:
    """A local job process's initializer: thread limits, its progress queue, and Ctrl-C left to the parent.

    The parent forwards Ctrl-C to the jobs that are running; an idle worker
    that died of it would break the pool (and a training installs its own
    handler, so it still stops cleanly with a checkpoint).
    """
    global EVENTS
    EVENTS = events
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads)
