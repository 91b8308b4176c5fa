"""The spec's [parallel] table: how many jobs run at once, and where (defaults for the ``rdkit bench`` options).

The command line wins over the spec; none of these values is part of a
cache key, so a sweep gives the same results however it is run. ``jobs``
may be any positive number (the executors run at most as many jobs as
there are cores, or as the Ray cluster has room for, and say so);
``threads_per_job`` is at most :data:`MAX_THREADS_PER_JOB` (torch's thread
count is a C ``int``: 2**31 overflowed in every worker).
"""

from __future__ import annotations

from typing import Any

from rdkit_ae.bench.spec_tables import SpecError

PARALLEL_KEYS = ("jobs", "threads_per_job", "executor", "address")
MAX_THREADS_PER_JOB = 1024  # more cores than any machine a job runs on has
EXECUTORS = ("local", "ray")


def parallel_table(value: Any, source: str) -> dict[str, Any]:
    """``{jobs, threads_per_job, executor, address}`` as given (all optional), checked."""
    if not isinstance(value, dict):
        raise SpecError(f"{source}: [parallel] must be a table")
    unknown = set(value) - set(PARALLEL_KEYS)
    if unknown:
        raise SpecError(
            f"{source}: [parallel]: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(PARALLEL_KEYS)}"
        )
    for key in ("jobs", "threads_per_job"):
        v = value.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpecError(f"{source}: [parallel].{key} must be a positive integer, got {v!r}")
    threads = value.get("threads_per_job", 1)
    if threads > MAX_THREADS_PER_JOB:
        raise SpecError(f"{source}: [parallel].threads_per_job must be at most {MAX_THREADS_PER_JOB}, got {threads}")
    if value.get("executor", "local") not in EXECUTORS:
        raise SpecError(f"{source}: [parallel].executor must be local or ray, got {value['executor']!r}")
    if not isinstance(value.get("address", "x"), str) or value.get("address") == "":
        raise SpecError(f"{source}: [parallel].address must be a non-empty string (a Ray address)")
    return dict(value)
