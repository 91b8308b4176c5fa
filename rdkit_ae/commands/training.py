"""``rdkit train``: the CLI spelling of :class:`rdkit_ae.training.options.TrainOptions`, run by the Trainer."""

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
    data: str = typer.Option(
        "cifar10",
        "--data",
        "-d",
        help="cifar10, a .npz (uint8 x: N,H,W,3), an image folder, or a folder with cifar-10-batches-py",
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="validation share for sources without an official split (split by seed)"
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
    seed: Optional[int] = typer.Option(
        None, "--seed", help="seed of the split, data order, augmentation and init (default: the recipe's)"
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes (useful for image folders on a GPU)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder from its last.pt"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing (errors still go to stderr)"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip the final real-bitstream evaluation (eval.json)"),
) -> None:
    """Train a recipe's model and write a run folder (checkpoints, metrics, figures, eval.json).

    Ctrl-C saves last.pt and exits with code 130; continue with --resume RUN_DIR.
    Under torchrun every process runs this same command; rank 0 writes.
    """
    from rdkit_ae.training.loop import Trainer
    from rdkit_ae.training.options import TrainOptions
    from rdkit_ae.training.results import TrainingInterrupted

    options = TrainOptions(
        recipe=recipe,
        data=data,
        out=out,
        overrides=tuple(set_),
        epochs=epochs,
        max_steps=max_steps,
        limit_train=limit_train,
        limit_val=limit_val,
        time_budget=time_budget,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        threads=threads,
        resume=resume,
        quiet=quiet,
        evaluate=not no_eval,
        workers=workers,
    )
    try:
        Trainer(options).run()
    except TrainingInterrupted as exc:
        if exc.is_main:
            typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted before a checkpoint could be saved (or aborted by a second Ctrl-C)", err=True)
        raise typer.Exit(130) from None
