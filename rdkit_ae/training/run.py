"""``train(recipe, data)``: the public entry point; optimise a recipe's model and leave a run folder.

The run folder holds ``recipe.toml`` (resolved), ``last.pt`` and ``best.pt``
(by validation loss; weights, optimiser/schedule state, position, RNG states,
callback states and the recipe, all loadable with
``torch.load(weights_only=True)``), ``metrics.jsonl``, ``loss_curves.png``,
``comparison.png``, ``eval.json`` (real bitstreams on the validation split)
and ``run.json``. The options are the fields of
:class:`~rdkit_ae.training.options.TrainOptions`, spelled only there; the
loop is :class:`~rdkit_ae.training.loop.Trainer`.
"""

from __future__ import annotations

from typing import Any, Sequence

from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.loop import Trainer
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.results import TrainResult

__all__ = ["train"]


def train(*args: Any, callbacks: Sequence[Callback] = (), **options: Any) -> TrainResult:
    """Train a recipe's model and return where everything went.

    ``train(recipe, data="cifar10", out=None, **options)``: up to three
    positional arguments (``recipe``, ``data``, ``out``), every other
    :class:`TrainOptions` field by name (``epochs``, ``max_steps``,
    ``time_budget``, ``fit_schedule``, ``threads``, ``resume``, ``quiet``,
    ``evaluate``, ...; see its field comments). ``callbacks``:
    :class:`Callback` objects to run after the recipe's ``[train] callbacks``
    (their state is saved in last.pt under their class name; pass the same
    ones on resume). An unknown option raises ``TypeError`` naming the
    known ones; a bad value raises a one-line :class:`RdkitError` before
    anything is created.

    Raises:
        TrainingInterrupted: after Ctrl-C/SIGTERM, once last.pt is saved.
        NonFiniteLossError: the loss became NaN/inf (last.pt keeps the last good state).
        RdkitError: bad arguments, recipe or data.
    """
    return Trainer(TrainOptions.from_args(*args, **options), callbacks).run()
