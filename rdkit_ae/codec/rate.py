"""The operating point of a variable-rate model in ``.rdk`` files: what the encoder stores, what the decoder sets.

A variable-rate model (``RDModel.variable_rate``, e.g. quantizer ``gain``)
codes at its current rate position ``t``; the encoder stores ``t`` in the
file (a version 2 file) as the float32 the gains are computed from, and the
decoder sets it before decoding and restores its own afterwards, so a file
decodes the same whatever the decoder's operating point. Fixed-rate models
write version 1 files, unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from rdkit_ae.codec import container
from rdkit_ae.errors import FormatError, RdkitError


def stored_rate(model) -> float | None:
    """The rate position an ``.rdk`` file of ``model`` stores now (float32-exact), or None for a fixed rate."""
    rate = model.rate if getattr(model, "variable_rate", False) else None
    return None if rate is None else container.rate_value(rate)


def set_stored_rate(model, lmbda: float | None = None, index: float | None = None) -> float:
    """``model.set_rate``, then rounded to what a file stores, so coding and files agree exactly; the position."""
    t = model.set_rate(lmbda=lmbda, index=index)
    exact = container.rate_value(t)
    if exact != t:
        model.set_rate(index=exact)
    return exact


def describe(model) -> str:
    """``rate 2.5 of 0..5 (lambda 0.0091)`` for a variable-rate model, "" for a fixed-rate one."""
    rate = stored_rate(model)
    if rate is None:
        return ""
    q = model.latent_codec
    lambdas = getattr(q, "lambdas", None)
    span = f" of 0..{len(lambdas) - 1}" if lambdas else ""
    lmbda = getattr(q, "lmbda", None)
    return f"rate {rate:g}{span}" + (f" (lambda {lmbda:.4g})" if lmbda is not None else "")


@contextlib.contextmanager
def file_rate(model, rate: float | None) -> Iterator[None]:
    """Decode at a file's rate position (None: a version 1 file, the model's current point as before)."""
    if rate is None:
        yield
        return
    if not getattr(model, "variable_rate", False):
        raise FormatError(f"corrupt file: it stores rate position {rate:g}, but the model has a single rate")
    before = model.rate
    try:
        model.set_rate(index=rate)
    except RdkitError as exc:
        raise FormatError(f"corrupt file: rate position {rate:g} does not fit the model ({exc})") from None
    try:
        yield
    finally:
        model.set_rate(index=before)
