"""The typer application and the error handler that every command module shares.

Command modules import ``app`` from here and register themselves on it;
:mod:`rdkit_ae.cli` imports them all. Nothing heavy is imported here, so
``rdkit --help`` stays fast.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

from rdkit_ae.errors import RdkitError


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
    return typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )


app = new_app(name="rdkit", help="rdkit-ae: plugin-based rate-distortion toolkit for learned image compression.")
