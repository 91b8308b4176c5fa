"""Run a model the same way on every machine: fixed intra-op threads, no autograd, eval mode.

oneDNN convolutions round differently at different thread counts, so every
model computation of the codec runs with :data:`CODEC_THREADS` threads,
whatever the caller's setting (see docs/format.md). What chooses a CDF no
longer depends on it (the portable entropy path is exact at any thread
count); the float synthesis does, by at most one level per pixel.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

CODEC_THREADS = 1


@contextlib.contextmanager
def fixed_threads(n: int | None = None) -> Iterator[None]:
    """Run torch with ``n`` (default :data:`CODEC_THREADS`) intra-op threads inside the block, without autograd."""
    n = CODEC_THREADS if n is None else n
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def evaluating(model) -> Iterator[None]:
    """Eval mode inside the block (coding in training mode would use batch statistics), restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_device(model) -> torch.device | str:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else "cpu"
