"""How a sweep reports progress: steps (tasks) with a rough cost, and the Reporter protocol that shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass
class Task:
    kind: str  # "train", "eval", "codec"
    label: str
    weight: float  # rough seconds, for the ETA
    cached: bool = False


class Reporter(Protocol):
    def begin(self, tasks: Sequence[Task]) -> None: ...
    def start(self, task: Task) -> None: ...
    def advance(self, task: Task, fraction: float) -> None: ...
    def finish(self, task: Task, cached: bool) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    """A Reporter that shows nothing (the Python API's default)."""

    def begin(self, tasks: Sequence[Task]) -> None:
        pass

    def start(self, task: Task) -> None:
        pass

    def advance(self, task: Task, fraction: float) -> None:
        pass

    def finish(self, task: Task, cached: bool) -> None:
        pass

    def note(self, message: str) -> None:
        pass
