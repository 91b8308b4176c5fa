"""The ``rdkit`` command line: a thin layer over the Python API.

Only typer is imported at start-up; every command imports torch, CompressAI
and the rest of rdkit_ae inside its body so ``rdkit --help`` stays fast.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from .errors import RdkitError


class _Group(TyperGroup):
    """Turns user errors (RdkitError) into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RdkitError as exc:
            raise click.ClickException(str(exc)) from None


def new_app(**kwargs) -> typer.Typer:
    return typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)


app = new_app(name="rdkit", help="rdkit-ae: plugin-based rate-distortion toolkit for learned image compression.")

# Command modules register themselves on `app` when imported (they import
# nothing heavy at module level).
from .commands import core as _core  # noqa: E402,F401
from .commands import train as _train  # noqa: E402,F401
from .commands import evaluate as _evaluate  # noqa: E402,F401
from .commands import codec as _codec  # noqa: E402,F401


def run() -> None:
    """Console-script entry point."""
    app()
