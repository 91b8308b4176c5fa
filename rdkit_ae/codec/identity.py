"""Which model made a file: the 4-byte model id, and the error for a file from another model."""

from __future__ import annotations

import hashlib
import json

import torch

from rdkit_ae.codec import container
from rdkit_ae.errors import FormatError
from rdkit_ae.plugin.exact import integer_networks

_ID_DOMAIN = b"rdkit-ae model id v1\0"


class ModelMismatchError(FormatError):
    """An ``.rdk`` file made by another model than the one decoding it."""

    def __init__(self, file_id: bytes, model_id: bytes, checkpoint: str = "the checkpoint", source: str = ""):
        self.file_id, self.model_id = bytes(file_id), bytes(model_id)
        super().__init__(
            f"{source + ': ' if source else ''}made by model {container.format_id(file_id)}, but {checkpoint} is model "
            f"{container.format_id(model_id)}; decode it with the checkpoint that compressed it"
        )


def model_id(model, recipe=None) -> bytes:
    """A 4-byte id: SHA-256 of the model-defining recipe sections and every tensor of the state dict.

    Only ``[encoder]``, ``[quantizer]`` and ``[decoder]`` count (training
    settings do not change what a file decodes to); the state dict includes
    the entropy coder's CDF tables, so two models that would code differently
    get different ids. The integer networks of the portable path are left
    out: they are derived from the float weights (rdkit_ae.plugin.exact), so
    files written before they existed keep the id of their model.
    """
    derived = tuple(f"{name}." for name, _ in integer_networks(model))
    recipe = recipe if recipe is not None else getattr(model, "recipe", None)
    h = hashlib.sha256(_ID_DOMAIN)
    if recipe is not None:
        sections = {k: recipe.data.get(k) for k in ("encoder", "quantizer", "decoder")}
        h.update(json.dumps(sections, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\0")
    for key, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor) or key.startswith(derived):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[: container.ID_BYTES]
