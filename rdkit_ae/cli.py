"""The ``rdkit`` command line: a thin layer over the Python API.

Only typer is imported at start-up; every command imports torch, CompressAI
and the rest of rdkit_ae inside its body so ``rdkit --help`` stays fast.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

from .errors import RdkitError


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors (RdkitError) into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RdkitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def new_app(**kwargs: Any) -> typer.Typer:
    kwargs.setdefault("no_args_is_help", True)
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)


app = new_app(name="rdkit", help="rdkit-ae: plugin-based rate-distortion toolkit for learned image compression.")

# Command modules register themselves on `app` when imported (they import
# nothing heavy at module level).
from .commands import core as _core  # noqa: E402,F401
from .commands import train as _train  # noqa: E402,F401
from .commands import evaluate as _evaluate  # noqa: E402,F401
from .commands import codec as _codec  # noqa: E402,F401


def run() -> None:
    """Console-script entry point."""
    import warnings

    # CompressAI 1.2.8 calls torch.jit.script, which torch 2.14 deprecates; the
    # warning means nothing to a CLI user (the library itself does not filter it).
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    app()
