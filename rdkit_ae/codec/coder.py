"""A loaded checkpoint ready to code images to ``.rdk`` bytes and back (the API under ``rdkit compress``).

Determinism and safety are the modules' below: :mod:`~rdkit_ae.codec.determinism`
(threads, eval mode), :mod:`~rdkit_ae.guards` (crafted checkpoints and
strings), :mod:`~rdkit_ae.codec.arrays` (one image <-> bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rdkit_ae.checkpoint import load_model
from rdkit_ae.codec import container
from rdkit_ae.codec.arrays import compress_array, decompress_bytes, reconstruct_array
from rdkit_ae.codec.identity import model_id
from rdkit_ae.guards import check_model, guard_entropy_coders


@dataclass
class Codec:
    """A checkpoint ready to code: the model (eval, checked, guarded), its recipe and id."""

    model: Any
    recipe: Any
    id: bytes
    source: str = "model"
    max_pixels: int = container.MAX_PIXELS
    # Pixels a file may claim per coded byte (None: any, up to max_pixels): see container.check_claim.
    pixels_per_byte: int | None = container.PIXELS_PER_BYTE

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        max_pixels: int = container.MAX_PIXELS,
        pixels_per_byte: int | None = container.PIXELS_PER_BYTE,
    ) -> "Codec":
        model, recipe, _ = load_model(path)  # checked and guarded there
        return cls(model, recipe, model_id(model, recipe), str(path), max_pixels, pixels_per_byte)

    @classmethod
    def from_model(
        cls,
        model,
        recipe=None,
        *,
        max_pixels: int = container.MAX_PIXELS,
        pixels_per_byte: int | None = container.PIXELS_PER_BYTE,
    ) -> "Codec":
        model.eval()
        check_model(model)
        guard_entropy_coders(model)
        recipe = recipe if recipe is not None else getattr(model, "recipe", None)
        return cls(model, recipe, model_id(model, recipe), "model", max_pixels, pixels_per_byte)

    @property
    def id_hex(self) -> str:
        return container.format_id(self.id)

    def compress(self, image: np.ndarray) -> bytes:
        return compress_array(self.model, image, mid=self.id, max_pixels=self.max_pixels)

    def decompress(self, data: bytes, *, trusted: bool = False) -> np.ndarray:
        """Decode ``.rdk`` bytes; ``trusted`` skips the bomb check (for bytes this codec just wrote)."""
        per_byte = None if trusted else self.pixels_per_byte
        return decompress_bytes(self.model, data, mid=self.id, max_pixels=self.max_pixels, pixels_per_byte=per_byte)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        return reconstruct_array(self.model, image, max_pixels=self.max_pixels)
