"""Shared helpers for the hostile-input tests (no tests here): the CLI in a child process, crafted files."""

from __future__ import annotations

import functools
import os
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float  # the child's peak resident memory


# ``python -m rdkit_ae ARGS`` that writes its own peak resident memory (VmHWM, kB) to argv[1] at exit.
_REPORT_OWN_PEAK = """
import atexit, runpy, sys
def _peak(path=sys.argv[1]):
    with open("/proc/self/status") as f:
        kb = next((ln.split()[1] for ln in f if ln.startswith("VmHWM:")), "")
    with open(path, "w") as f:
        f.write(kb)
atexit.register(_peak)
sys.argv = ["rdkit", *sys.argv[2:]]
runpy.run_module("rdkit_ae", run_name="__main__", alter_sys=True)
"""


def run_cli(
    tmp_path: Path,
    *args: object,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    max_vm_mb: float | None = None,
) -> Run:
    """``python -m rdkit_ae ARGS`` in a fresh process (a segfault fails the test, not the run), with its peak memory.

    ``max_vm_mb`` caps the child's address space (``RLIMIT_AS``): a regression
    that allocates gigabytes then fails the test with a MemoryError instead of
    taking the machine's memory.
    """
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    fd, name = tempfile.mkstemp(prefix="rdkit-peak-")  # outside tmp_path: tests check what the CLI wrote there
    os.close(fd)
    hwm = Path(name)
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    limit = None if max_vm_mb is None else int(max_vm_mb * 2**20)
    start = time.monotonic()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-c", _REPORT_OWN_PEAK, str(hwm), *map(str, args)],
            stdout=fo,
            stderr=fe,
            env=full_env,
            cwd=REPO,
            preexec_fn=None if limit is None else lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        )
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            # wait4, unlike Popen.wait, returns this child's own resource usage (its peak RSS).
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if seconds >= timeout:
        raise AssertionError(f"rdkit {' '.join(map(str, args))} ran past {timeout} s")
    # The child's own peak (VmHWM of its post-exec address space) when it exited normally; else wait4's
    # ru_maxrss, which also counts the pages of this test process at fork time.
    own = hwm.read_text().strip()
    hwm.unlink()
    peak_kb = int(own) if own.isdigit() else usage.ru_maxrss
    return Run(proc.returncode, out.read_text(), err.read_text(), seconds, peak_kb / 1024)


@functools.cache
def baseline_peak_mb() -> float:
    """Peak memory of a cheap CLI command (``rdkit info conv-mse``) measured the same way.

    A child's peak can include pages it shared with this (large) test process
    before exec, so limits are stated relative to this baseline.
    """
    run = run_cli(Path(tempfile.mkdtemp(prefix="rdkit-baseline-")), "info", "conv-mse")
    assert run.rc == 0, run.stderr[-2000:]
    return run.peak_mb


def assert_cheap(run: Run, extra_mb: float = 400) -> None:
    """The command used at most ``extra_mb`` more memory than the baseline (the bugs cost gigabytes)."""
    assert run.peak_mb < baseline_peak_mb() + extra_mb, (run.peak_mb, baseline_peak_mb())


def assert_one_line_error(run: Run, *fragments: str) -> str:
    """Exit code 1, exactly one ``error:`` line on stderr containing ``fragments``, no traceback."""
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.rc == 1, (run.rc, run.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def png_bytes(width: int, height: int, idat: bytes, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG file built by hand: any IHDR we like, with the given (zlib) IDAT payload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
