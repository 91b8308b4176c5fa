"""``rdkit train``: the command-line flags of :class:`rdkit_ae.training.options.TrainOptions`, run by the Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors


@app.command()
@handle_errors
def train(
    recipe: Optional[str] = typer.Option(
        None, "--recipe", "-r", help="zoo name or path to a .toml recipe (not needed with --resume)"
    ),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        "-d",
        help="cifar10 (the default), a .npz (uint8 x: N,H,W,3), an image folder, or a folder with cifar-10-batches-py",
    ),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help="validation share for sources without an official split (0.1; split by seed)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default: runs/<recipe>-<timestamp>)"),
    set_: List[str] = typer.Option([], "--set", help="recipe override: dotted.key=value (TOML value); repeatable"),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="planned epochs (the schedule spans them; default: the recipe's)"
    ),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many optimiser steps in total"),
    limit_train: Optional[int] = typer.Option(None, "--limit-train", help="use only the first N training images"),
    limit_val: Optional[int] = typer.Option(None, "--limit-val", help="use only the first N validation images"),
    time_budget: Optional[float] = typer.Option(
        None, "--time-budget", help="minutes; stops at an epoch boundary, then evaluates"
    ),
    fit_schedule: bool = typer.Option(
        False,
        "--fit-schedule",
        help="size the planned epochs (and the cosine schedule) to --time-budget from the pace measured in the "
        "first epochs, so the schedule ends within the budget (replaces --epochs)",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="seed of the split, data order, augmentation and init (default: the recipe's)"
    ),
    device: Optional[str] = typer.Option(None, "--device", help="auto (the default: CUDA when present), cpu, cuda[:N]"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch"),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="DataLoader worker processes (default 0; useful for image folders on a GPU)"
    ),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder from its last.pt"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing (errors still go to stderr)"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip the final real-bitstream evaluation (eval.json)"),
) -> None:
    """Train a recipe's model and write a run folder (checkpoints, metrics, figures, eval.json).

    Ctrl-C saves last.pt and exits with code 130; continue with --resume RUN_DIR.
    Under torchrun every process runs this same command; rank 0 writes.
    """
    # The parameters are named as TrainOptions' fields (but --set and --no-eval); an option not given is left
    # out, so the dataclass's default applies: the options and their defaults are defined there only.
    given = {name: value for name, value in locals().items() if value is not None}
    given["overrides"] = tuple(given.pop("set_"))
    given["evaluate"] = not given.pop("no_eval")

    from rdkit_ae.training.loop import Trainer
    from rdkit_ae.training.options import TrainOptions
    from rdkit_ae.training.results import TrainingInterrupted

    options = TrainOptions.from_args(**given)
    try:
        Trainer(options).run()
    except TrainingInterrupted as exc:
        if exc.is_main:
            typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted before a checkpoint could be saved (or aborted by a second Ctrl-C)", err=True)
        raise typer.Exit(130) from None
