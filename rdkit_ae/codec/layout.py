"""What a model's quantizer puts in an ``.rdk`` file for an image of a given size: latent shape and stream count.

Nothing of this is stored in the file (see docs/format.md): it follows from
H, W and the model. A quantizer describes its own layout through the optional
plugin method ``bitstream_layout(h, w) -> (shape, n_streams)`` (``h, w``: the
latent's spatial size); for one that does not, the layout is measured by
compressing a zero latent of the right size once.
"""

from __future__ import annotations

from typing import Any

import torch

from rdkit_ae.codec.container import MAX_STREAMS, Layout
from rdkit_ae.codec.determinism import fixed_threads, model_device
from rdkit_ae.errors import PluginError
from rdkit_ae.guards import guard_entropy_coders


def plain_shape(shape: Any) -> Any:
    """A quantizer's ``shape`` with tuples of ints throughout, so two descriptions compare equal."""
    if isinstance(shape, dict):
        return {k: plain_shape(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)):
        return tuple(int(v) for v in shape)
    return shape


def latent_layout(model, height: int, width: int) -> Layout:
    """The quantizer's ``shape`` and stream count for an ``height`` x ``width`` image."""
    k, h, w = model.latent_shape(height, width)
    quantizer = model.latent_codec
    describe = getattr(quantizer, "bitstream_layout", None)
    if describe is None:
        return _measured_layout(model, k, h, w)
    try:
        shape, streams = describe(h, w)
    except (TypeError, ValueError):
        raise PluginError(
            f"quantizer {type(quantizer).__name__}: bitstream_layout(h, w) must return (shape, n_streams)"
        ) from None
    if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= MAX_STREAMS:
        raise PluginError(
            f"quantizer {type(quantizer).__name__}: bitstream_layout gave {streams!r} streams (1..{MAX_STREAMS})"
        )
    return Layout(plain_shape(shape), streams)


def _measured_layout(model, k: int, h: int, w: int) -> Layout:
    """A quantizer without ``bitstream_layout``: what it produces for a zero latent of this size."""
    guard_entropy_coders(model)
    with fixed_threads():
        probe = model.latent_codec.compress(torch.zeros(1, k, h, w, device=model_device(model)))
    return Layout(plain_shape(probe["shape"]), len(probe["strings"]))
