"""Classical codecs through Pillow (JPEG, WebP, AVIF) measured like learned models.

Each image is encoded to a complete file in memory and decoded back; the rate
counts every byte of that file (headers included: at 32x32 they dominate
JPEG and AVIF, see docs/evaluation.md), and the decoded pixels go through
the same metrics as :func:`rdkit_ae.evaluation.evaluate`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.batching import same_size_batches
from rdkit_ae.evaluation.metrics import bpp_from_bytes, cr_from_bpp
from rdkit_ae.evaluation.metrics import quality as measure
from rdkit_ae.evaluation.results import EvalResult, summarize


class CodecError(RdkitError):
    """An unknown or unavailable classical codec, or a bad setting for one."""


@dataclass(frozen=True)
class Codec:
    label: str  # curve name, e.g. "WebP" (the default BD-rate anchor)
    pillow_format: str
    feature: str  # PIL.features name that says whether this Pillow can write it
    options: dict[str, Any] = field(default_factory=dict)
    default_qualities: tuple[int, ...] = ()


# The settings: JPEG with optimised Huffman tables, WebP at its
# slowest/best method; AVIF at Pillow's default speed.
CODECS: dict[str, Codec] = {
    "jpeg": Codec("JPEG", "JPEG", "jpg", {"optimize": True}, (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "webp": Codec("WebP", "WEBP", "webp", {"method": 6}, (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "avif": Codec("AVIF", "AVIF", "avif", {}, (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)),
}


def get_codec(name: str) -> Codec:
    key = name.lower()
    if key not in CODECS:
        raise CodecError(f"unknown classical codec '{name}'; known: {', '.join(CODECS)}")
    return CODECS[key]


def available(name: str) -> bool:
    """Whether this Pillow build can write the codec (AVIF needs Pillow >= 11.3 built with libavif)."""
    from PIL import features

    return bool(features.check(get_codec(name).feature))


def encode(image: np.ndarray, codec: str, quality: int, **options: Any) -> bytes:
    """Encode one uint8 (H, W, 3) image to a complete file (bytes)."""
    from PIL import Image

    c = get_codec(codec)
    if not 0 <= int(quality) <= 100:
        raise CodecError(f"{c.label} quality must be 0..100, got {quality}")
    buf = io.BytesIO()
    try:
        Image.fromarray(image, "RGB").save(buf, c.pillow_format, quality=int(quality), **{**c.options, **options})
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise CodecError(f"{c.label}: Pillow could not encode with quality={quality} {options or ''}: {exc}") from None
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode a file's bytes to uint8 (H, W, 3) RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def evaluate_codec(
    images,
    codec: str,
    quality: int,
    *,
    options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    metrics: Sequence[str] = (),
) -> EvalResult:
    """Code every image of an ImageSet at one quality; records follow ``evaluate``'s schema (``metrics``: the
    perceptual ones to add, as in ``evaluate``)."""
    from PIL import __version__ as pillow_version

    c = get_codec(codec)
    if not available(codec):
        raise CodecError(f"this Pillow ({pillow_version}) cannot write {c.label}")
    options = dict(options or {})
    records: list[dict[str, Any]] = []
    for names, batch in same_size_batches(images, 256):
        decoded = np.empty_like(batch)
        sizes, t_enc, t_dec = [], [], []
        for i, img in enumerate(batch):
            t0 = time.perf_counter()
            data = encode(img, codec, quality, **options)
            t1 = time.perf_counter()
            out = decode(data)
            t2 = time.perf_counter()
            if out.shape != img.shape:
                raise CodecError(f"{c.label} decoded {names[i]} to {out.shape}, expected {img.shape}")
            decoded[i] = out
            sizes.append(len(data))
            t_enc.append(t1 - t0)
            t_dec.append(t2 - t1)
        scores = measure(batch, decoded, metrics)
        H, W = batch.shape[1:3]
        for i, name in enumerate(names):
            bpp = bpp_from_bytes(sizes[i], H, W)
            records.append(
                {
                    "name": name,
                    "height": int(H),
                    "width": int(W),
                    "bytes": sizes[i],
                    "bpp": bpp,
                    "cr": cr_from_bpp(bpp),
                    **scores[i],
                    "encoding_time": t_enc[i],
                    "decoding_time": t_dec[i],
                    "quality": int(quality),
                }
            )
        if progress is not None:
            progress(len(names))
    settings = ", ".join(f"{k}={v}" for k, v in {**c.options, **options}.items())
    description = f"Pillow {pillow_version} {c.label}, full file bytes" + (f", {settings}" if settings else "")
    meta = {
        "codec": c.label,
        "quality": int(quality),
        "options": {**c.options, **options},
        "pillow": pillow_version,
        "data": getattr(images, "name", ""),
        "n_images": len(records),
    }
    return EvalResult(c.label, description, records, summarize(records), meta)


def sweep(
    images,
    codec: str,
    qualities: Sequence[int] | None = None,
    *,
    options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[EvalResult]:
    """One :class:`EvalResult` per quality (the default qualities span the codec's useful range)."""
    qs = list(qualities) if qualities is not None else list(get_codec(codec).default_qualities)
    return [evaluate_codec(images, codec, q, options=options, progress=progress) for q in qs]
