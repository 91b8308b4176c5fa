"""Data-dependent initialisation: modules with ``init_from_data(x)`` see the training images at the start of a run.

A module (of any plugin) that defines ``init_from_data(x)`` gets ``x``, a
float batch (B, 3, h, w) in [0, 1] of the first training patches, once, at
the start of a fresh run (e.g. the block transforms' PCA init). A resumed
run takes its weights from last.pt instead. Every process of a torchrun job
computes from the same images, so they start identical.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext

MAX_IMAGES = 2048
MAX_PIXELS = 1 << 22  # about 48 MB of float patches however large the crops are


def data_initialisers(model: nn.Module) -> list[Callable[[Tensor], None]]:
    """The ``init_from_data`` methods of the modules of ``model`` that define one, in ``modules()`` order."""
    found = (getattr(m, "init_from_data", None) for m in model.modules())
    return [f for f in found if callable(f)]


def init_from_data(model: nn.Module, x: Tensor) -> int:
    """Call ``init_from_data(x)`` on every module that has it (under ``no_grad``); returns how many."""
    initialisers = data_initialisers(model)
    with torch.no_grad():
        for init in initialisers:
            init(x)
    return len(initialisers)


class DataInit(Callback):
    """Initialises modules that define ``init_from_data`` from the first training patches of a fresh run.

    The patches are those of the training set's first epoch (its seeded
    crops and augmentation: the distribution the model is trained on), up to
    ``MAX_IMAGES`` images and ``MAX_PIXELS`` pixels.
    """

    builtin = True

    def __init__(self, max_images: int = MAX_IMAGES):
        self.max_images = int(max_images)
        self.initialised = 0

    def on_train_start(self, ctx: TrainContext) -> None:
        if ctx.resumed or not data_initialisers(ctx.model):
            return
        data = ctx.train_set
        h, w = data.patch
        n = max(1, min(len(data), self.max_images, MAX_PIXELS // (h * w)))
        epoch = data.epoch
        data.set_epoch(0)
        x = data.__getitems__(list(range(n)))
        data.set_epoch(epoch)
        self.initialised = init_from_data(ctx.model, x)
