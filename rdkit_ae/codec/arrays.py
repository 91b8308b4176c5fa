"""One image array <-> ``.rdk`` bytes with a loaded model (what :class:`rdkit_ae.codec.Codec` calls).

Images are coded one at a time (batched and single convolutions round
differently), every model computation runs under
:func:`~rdkit_ae.codec.determinism.fixed_threads`, and the entropy coders are
guarded first (:mod:`rdkit_ae.guards`).
"""

from __future__ import annotations

import numpy as np
import torch

from rdkit_ae.codec import container
from rdkit_ae.codec.determinism import evaluating, fixed_threads, model_device
from rdkit_ae.codec.identity import ModelMismatchError, model_id
from rdkit_ae.codec.layout import latent_layout, plain_shape
from rdkit_ae.codec.portability import path_for_version
from rdkit_ae.codec.rate import file_rate, stored_rate
from rdkit_ae.data.sources import to_tensor, to_uint8
from rdkit_ae.errors import DataError, FormatError, PluginError, RdkitError
from rdkit_ae.guards import guard_entropy_coders, symbol_ledger
from rdkit_ae.text import one_line


def _check_image(image: np.ndarray, max_pixels: int) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"expected a uint8 image of shape (H, W, 3), got {got}")
    height, width = image.shape[:2]
    try:
        container.check_size(height, width, max_pixels)
    except FormatError as exc:
        raise DataError(str(exc)) from None
    return height, width


def _as_input(image: np.ndarray, model) -> torch.Tensor:
    # Contiguous (not channels-last): the decoder sees contiguous latents, and
    # convolutions in another memory format round differently.
    if not image.flags.writeable:  # torch warns on read-only arrays (Pillow gives them)
        image = image.copy()
    return to_tensor(image).to(model_device(model)).contiguous()


def _to_image(x_hat: torch.Tensor) -> np.ndarray:
    # Garbage from a corrupt stream may be inf/NaN; make its pixels defined.
    return to_uint8(torch.nan_to_num(x_hat.float(), nan=0.0))[0]


def compress_array(
    model, image: np.ndarray, *, mid: bytes | None = None, max_pixels: int = container.MAX_PIXELS
) -> bytes:
    """Compress one uint8 (H, W, 3) image to ``.rdk`` bytes (entropy models must be updated; coded in eval mode).

    A variable-rate model codes at its current operating point, which the file records.
    The file (version 3, or 4 with a rate) carries a check of its symbols.
    """
    height, width = _check_image(image, max_pixels)
    guard_entropy_coders(model)
    mid = model_id(model) if mid is None else mid
    layout = latent_layout(model, height, width)
    with evaluating(model), fixed_threads(), symbol_ledger(model, "encode") as ledger:
        out = model.compress(_as_input(image, model))
    if len(out["strings"]) != layout.streams or plain_shape(out["shape"]) != layout.shape:
        raise RdkitError(
            f"the quantizer produced shape {out['shape']!r} in {len(out['strings'])} streams, but "
            f"{layout.shape!r} in {layout.streams} was derived; .rdk cannot store this quantizer"
        )
    return container.pack(mid, out, 0, max_pixels=max_pixels, rate=stored_rate(model), symbols=ledger.digest)


def decompress_bytes(
    model,
    data: bytes,
    *,
    mid: bytes | None = None,
    max_pixels: int = container.MAX_PIXELS,
    pixels_per_byte: int | None = container.PIXELS_PER_BYTE,
) -> np.ndarray:
    """Decode ``.rdk`` bytes to a uint8 (H, W, 3) image; any defect raises :class:`FormatError`.

    A file of a variable-rate model decodes at the rate position it stores
    (the model's own is restored after); a version 1 file at the model's.
    Version 3/4 files decode on the portable entropy path and are refused
    if the decoded symbols are not the encoder's; version 1/2 files decode
    on the float path they were written with.

    A file claiming more than ``pixels_per_byte`` pixels per coded byte is
    refused before decoding (:func:`~rdkit_ae.codec.container.check_claim`);
    None decodes a trusted file of any claim up to ``max_pixels``.
    """
    packed = container.unpack(data, max_pixels=max_pixels, pixels_per_byte=pixels_per_byte)
    mid = model_id(model) if mid is None else mid
    if packed.model_id != mid:  # before the stream count: a file of another model is not "corrupt"
        raise ModelMismatchError(packed.model_id, mid)
    height, width = packed.size
    layout = latent_layout(model, height, width)
    container.check_stream_count(len(packed.strings), layout)
    guard_entropy_coders(model)
    try:
        with file_rate(model, packed.rate), evaluating(model), fixed_threads(), path_for_version(model, packed.checked):
            with symbol_ledger(model, "decode") as ledger:
                x_hat = model.decompress(packed.strings, layout.shape, packed.size)["x_hat"]
    except FormatError as exc:
        if not packed.checked:
            raise
        # Its checksum can only be verified after decoding: what failed first is most likely damage.
        raise FormatError(f"corrupt or truncated file: {exc}") from None
    except PluginError:
        raise  # a plugin that failed, named by the model
    except Exception as exc:  # the quantizer choked on corrupt strings; report, never crash
        raise FormatError(f"corrupt data: the model cannot decode it ({one_line(exc, 200)})") from None
    packed.check_symbols(ledger.digest)
    if tuple(x_hat.shape) != (1, 3, height, width):
        raise FormatError(f"corrupt data: decoded to shape {tuple(x_hat.shape)}, expected (1, 3, {height}, {width})")
    return _to_image(x_hat)


def reconstruct_array(model, image: np.ndarray, *, max_pixels: int = container.MAX_PIXELS) -> np.ndarray:
    """The eval-mode forward reconstruction of one image, computed as the decoder computes (what decoding will give)."""
    _check_image(image, max_pixels)
    with evaluating(model), fixed_threads():
        x_hat = model(_as_input(image, model))["x_hat"]
    return _to_image(x_hat)
