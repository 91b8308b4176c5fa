"""Checkpoints of a run: last.pt every epoch (and on Ctrl-C), best.pt by validation loss, finalised at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rdkit_ae.checkpoint import load_checkpoint, save_checkpoint, write_checkpoint
from rdkit_ae.model import build_model
from rdkit_ae.recipe import Recipe
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.state import BEST, LAST, training_payload


class Checkpointer(Callback):
    """Writes last.pt after every (possibly partial) epoch and best.pt when validation improved.

    last.pt holds the trained model (what a resume needs); best.pt holds
    ``ctx.model_for_eval`` (the same model unless a callback substitutes one,
    e.g. EMA weights). Both carry the full training state and ``states()``,
    the callbacks' state. Writes are atomic and on rank 0 only; gathering the
    state is collective, so every rank calls the hooks.
    """

    builtin = True

    def __init__(self, states: Callable[[], dict[str, Any]] = dict):
        self.states = states
        self.saved_step: int | None = None

    def save(self, ctx: TrainContext, best: bool) -> None:
        extra = training_payload(
            ctx.position, ctx.optimizer, ctx.aux_optimizer, ctx.schedule, ctx.config, self.states()
        )
        self.saved_step = ctx.step
        if not ctx.info.is_main:
            return
        save_checkpoint(ctx.out / LAST, ctx.model, ctx.recipe, **extra)
        if best:
            save_checkpoint(ctx.out / BEST, ctx.model_for_eval, ctx.recipe, **extra)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        self.save(ctx, best=ctx.improved)

    def on_interrupt(self, ctx: TrainContext) -> None:
        if self.saved_step != ctx.step:  # stopped inside an epoch: keep the steps done since the last save
            self.save(ctx, best=False)


def finalize_checkpoint(path: Path) -> None:
    """Store entropy-coder tables (``update(force=True)`` on the CPU) in a checkpoint, in place.

    Tables built on the CPU are the same on every machine, so a file coded on
    one decodes on another.
    """
    payload = load_checkpoint(path, map_location="cpu")
    recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", "recipe"), f"{path}:recipe")
    model = build_model(recipe)
    model.load_state_dict(payload["model"])
    model.update(force=True)
    payload["model"] = model.state_dict()
    write_checkpoint(path, payload)  # refreshes the weights' digest
