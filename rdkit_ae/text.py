"""Text for people: one-line error messages, rich-safe strings, number formatting."""

from __future__ import annotations

from typing import Any


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if limit is None else line[:limit]


def escape(value: Any) -> str:
    """User text (paths, labels) printed through rich: brackets are not markup."""
    from rich.markup import escape as _escape

    return _escape(str(value))


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A number for a table; ``-`` for a missing one."""
    return "-" if value is None else format(value, spec)
