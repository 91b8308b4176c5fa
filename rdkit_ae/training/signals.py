"""Ctrl-C and SIGTERM during training: a flag the loop reads between steps, so no step is left half done.

This is not a callback: the handler must be installed from the main thread
around the whole loop, and acting on it (save, then exit 130/143) needs every
process to agree at the same step, which the loop arranges.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps (so no step is half done).

    A second Ctrl-C more than a second after the first aborts at once, as
    Python's default handler would (torchrun and the terminal may each
    deliver the first one, hence the grace period).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first = 0.0
        self._old: dict[signal.Signals, Any] = {}

    def _handler(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is not None and signum == signal.SIGINT and now - self._first > 1.0:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum, self._first = signum, now

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()
