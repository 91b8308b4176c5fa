"""Callbacks: code that runs at fixed points of the training loop, with state that survives a resume.

Hook order in one run::

    on_train_start
    per epoch:  on_epoch_start, on_step_end (after every optimiser step),
                on_validation(metrics), on_epoch_end (record, checkpoint, log)
    on_interrupt (Ctrl-C/SIGTERM, before the process exits 130/143)
    on_exception (the run failed: a NaN stop, an error in the data, a plugin or a callback)
    on_train_end (after the final checkpoint and evaluation)

Every hook gets the :class:`TrainContext`. Callbacks run in list order; the
built-in ones (stops, checkpoints, metrics log, figures) are placed around
the recipe's so that a stop requested at a step is seen before that step is
checked, a recipe callback's changes at ``on_epoch_end`` are in the
checkpoint written after it, and the time budget measures whole epochs.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from rdkit_ae.errors import PluginError, RecipeError
from rdkit_ae.recipe import Recipe
from rdkit_ae.registry import check_params, get_plugin
from rdkit_ae.text import one_line
from rdkit_ae.training.context import TrainContext

KIND = "callback"


class Callback:
    """Base class: override the hooks you need; all default to doing nothing.

    ``state_dict`` must return plain data (tensors, numbers, strings, lists,
    dicts): it is stored in last.pt (loaded with ``weights_only=True``) and
    handed to ``load_state_dict`` when the run is resumed, before
    ``on_train_start``. Hooks run on every process under torchrun; write
    files only where ``ctx.info.is_main``.
    """

    builtin = False  # built-in callbacks are always on; a recipe cannot name them

    def on_train_start(self, ctx: TrainContext) -> None:
        pass

    def on_epoch_start(self, ctx: TrainContext) -> None:
        pass

    def on_step_end(self, ctx: TrainContext) -> None:
        pass

    def on_validation(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, ctx: TrainContext) -> None:
        pass

    def on_interrupt(self, ctx: TrainContext) -> None:
        pass

    def on_exception(self, ctx: TrainContext, exc: BaseException) -> None:
        """The run is failing with ``exc`` (re-raised after every callback ran): close files, release resources."""

    def on_train_end(self, ctx: TrainContext) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class CallbackList:
    """Calls a hook on every callback, in order; keys their state by name (``name#2`` for a repeated one)."""

    def __init__(self, callbacks: Iterable[tuple[str, Callback]] = ()):
        self.items: list[tuple[str, Callback]] = []
        for name, cb in callbacks:
            self.add(name, cb)

    def add(self, name: str, callback: Callback) -> None:
        key, n = name, 1
        while any(k == key for k, _ in self.items):
            n += 1
            key = f"{name}#{n}"
        self.items.append((key, callback))

    def __iter__(self) -> Iterator[Callback]:
        return (cb for _, cb in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def on_train_start(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_train_start(ctx)

    def on_epoch_start(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_epoch_start(ctx)

    def on_step_end(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_step_end(ctx)

    def on_validation(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        for cb in self:
            cb.on_validation(ctx, metrics)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_epoch_end(ctx)

    def on_interrupt(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_interrupt(ctx)

    def on_exception(self, ctx: TrainContext, exc: BaseException) -> None:
        # Every callback gets its turn, and none may replace the error the run is failing with.
        for cb in self:
            try:
                cb.on_exception(ctx, exc)
            except Exception:  # noqa: BLE001, S110 - the original exception is what the user must see
                pass

    def on_train_end(self, ctx: TrainContext) -> None:
        for cb in self:
            cb.on_train_end(ctx)

    def state_dict(self) -> dict[str, Any]:
        """Each callback's non-empty state, by key."""
        return {key: state for key, cb in self.items if (state := cb.state_dict())}

    def load_state_dict(self, states: Mapping[str, Any]) -> None:
        for key, cb in self.items:
            if key in states:
                cb.load_state_dict(states[key])


def recipe_callbacks(recipe: Recipe) -> list[tuple[str, Callback]]:
    """The callbacks a recipe names in ``[train] callbacks = [{ name = "...", param = ... }, ...]``."""
    entries = recipe.train.get("callbacks", [])
    out: list[tuple[str, Callback]] = []
    for i, entry in enumerate(entries):
        where = f"{recipe.source}: [train] callbacks #{i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RecipeError(f"{where} must be a table with a string 'name', got {entry!r}")
        params = {k: v for k, v in entry.items() if k != "name"}
        try:
            info = get_plugin(KIND, entry["name"])
            if getattr(info.factory, "builtin", False):
                raise PluginError(f"callback '{info.name}' is built in and always on; do not name it in a recipe")
            check_params(info, params)
            callback = info.factory(**params)
        except (PluginError, TypeError, ValueError) as exc:
            raise RecipeError(f"{where} {one_line(exc)}") from None
        if not isinstance(callback, Callback):
            raise RecipeError(f"{where}: '{info.name}' made a {type(callback).__name__}, not a Callback")
        out.append((info.name, callback))
    return out
