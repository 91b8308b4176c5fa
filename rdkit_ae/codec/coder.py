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
from rdkit_ae.codec.rate import describe, set_stored_rate, stored_rate
from rdkit_ae.guards import check_model, guard_entropy_coders


@dataclass
class Codec:
    """A checkpoint ready to code: the model (eval, checked, guarded), its recipe and id.

    A variable-rate model compresses at the operating point picked by
    ``lmbda=``/``rate=`` (``load``, ``from_model``) or :meth:`set_rate`
    (default: the quantizer's, the middle of its range); the files record it
    and :meth:`decompress` needs no choice.
    """

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
        lmbda: float | None = None,
        rate: float | None = None,
    ) -> "Codec":
        model, recipe, _ = load_model(path)  # checked and guarded there
        codec = cls(model, recipe, model_id(model, recipe), str(path), max_pixels, pixels_per_byte)
        return codec._at(lmbda, rate)

    @classmethod
    def from_model(
        cls,
        model,
        recipe=None,
        *,
        max_pixels: int = container.MAX_PIXELS,
        pixels_per_byte: int | None = container.PIXELS_PER_BYTE,
        lmbda: float | None = None,
        rate: float | None = None,
    ) -> "Codec":
        model.eval()
        check_model(model)
        guard_entropy_coders(model)
        recipe = recipe if recipe is not None else getattr(model, "recipe", None)
        return cls(model, recipe, model_id(model, recipe), "model", max_pixels, pixels_per_byte)._at(lmbda, rate)

    def _at(self, lmbda: float | None, rate: float | None) -> "Codec":
        if lmbda is not None or rate is not None:
            self.set_rate(lmbda=lmbda, rate=rate)
        return self

    def set_rate(self, lmbda: float | None = None, rate: float | None = None) -> float:
        """Compress at ``lmbda`` (within the trained range) or rate index ``rate`` (fractional interpolates).

        Returns the rate position (as files store it). A fixed-rate model or
        a value outside the model's range raises a one-line :class:`RdkitError`.
        """
        return set_stored_rate(self.model, lmbda=lmbda, index=rate)

    @property
    def rate(self) -> float | None:
        """The rate position files are written at; None for a fixed-rate model."""
        return stored_rate(self.model)

    @property
    def operating_point(self) -> str:
        """``rate 2.5 of 0..5 (lambda 0.0091)``; "" for a fixed-rate model."""
        return describe(self.model)

    @property
    def id_hex(self) -> str:
        return container.format_id(self.id)

    def compress(self, image: np.ndarray) -> bytes:
        return compress_array(self.model, image, mid=self.id, max_pixels=self.max_pixels)

    def compress_to(
        self,
        image: np.ndarray,
        *,
        bpp: float | None = None,
        cr: float | None = None,
        max_bytes: int | None = None,
        psnr: float | None = None,
        max_passes: int | None = None,
    ) -> tuple[bytes, Any]:
        """Compress at the rate position meeting one target (variable-rate models): ``(bytes, RateReport)``.

        ``max_bytes`` is never exceeded (the whole file); ``bpp``/``cr`` land
        closest; ``psnr`` gives the smallest file at or above it. See
        :mod:`rdkit_ae.codec.rate_control`; the codec's own rate is kept.
        """
        from rdkit_ae.codec import rate_control

        target = rate_control.target_of(bpp=bpp, cr=cr, max_bytes=max_bytes, psnr=psnr)
        passes = rate_control.DEFAULT_PASSES if max_passes is None else max_passes
        return rate_control.compress_to(self, image, target, max_passes=passes)

    def decompress(self, data: bytes, *, trusted: bool = False) -> np.ndarray:
        """Decode ``.rdk`` bytes; ``trusted`` skips the bomb check (for bytes this codec just wrote)."""
        per_byte = None if trusted else self.pixels_per_byte
        return decompress_bytes(self.model, data, mid=self.id, max_pixels=self.max_pixels, pixels_per_byte=per_byte)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        return reconstruct_array(self.model, image, max_pixels=self.max_pixels)
