"""Bench ``targets = { bpp = [...] }``: evaluate a variable-rate model at exactly these bpp values.

Each image is coded by rate control (:mod:`rdkit_ae.codec.rate_control`) at
the target, measured as the bench measures bpp (the quantizer's streams, the
container left out, like every other curve's ``bpp``), then decoded from its
bytes and scored like :func:`~rdkit_ae.evaluation.evaluator.evaluate`.
``encoding_time`` counts every pass of the search; ``rate`` and ``passes``
are recorded per image.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from rdkit_ae.codec import container
from rdkit_ae.codec.coder import Codec
from rdkit_ae.codec.rate_control import DEFAULT_PASSES, Target, compress_to
from rdkit_ae.data.sources import iter_images
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.metrics import bpp_from_bytes, cr_from_bpp, quality
from rdkit_ae.evaluation.padding import DEFAULT_PAD
from rdkit_ae.evaluation.results import EvalResult, summarize


def _stream_bytes(data: bytes) -> int:
    return len(data) - container.header_size(data, max_pixels=container.MAX_PIXELS)


def evaluate_at_bpp(
    checkpoint: str,
    images,
    *,
    bpp: float,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
    pad: str = DEFAULT_PAD,
    max_passes: int = DEFAULT_PASSES,
    metrics: Sequence[str] = (),
    **_: Any,
) -> EvalResult:
    """Every image coded at ``bpp`` (its streams) by rate control, decoded from its bytes and scored."""
    if pad != DEFAULT_PAD:
        raise RdkitError(f"targets code as rdkit compress does (pad = '{DEFAULT_PAD}'), not pad = '{pad}'")
    codec = Codec.load(checkpoint, max_pixels=container.MAX_PIXELS, pixels_per_byte=None)
    target = Target("bpp", bpp)
    records = []
    for image_name, image in iter_images(images):
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        data, report = compress_to(codec, image, target, max_passes=max_passes, name=image_name, size_of=_stream_bytes)
        t1 = time.perf_counter()
        decoded = codec.decompress(data, trusted=True)
        t2 = time.perf_counter()
        rec: dict[str, Any] = {"name": image_name, "height": h, "width": w, "bytes": report.nbytes}
        rec["bpp"] = bpp_from_bytes(report.nbytes, h, w)
        rec["container_bytes"] = len(data)
        rec["container_bpp"] = bpp_from_bytes(len(data), h, w)
        rec["cr"] = cr_from_bpp(rec["bpp"])
        rec.update(quality(image[None], decoded[None], metrics)[0])
        rec.update(encoding_time=t1 - t0, decoding_time=t2 - t1, rate=report.rate, passes=len(report.passes))
        records.append(rec)
        if progress is not None:
            progress(1)
    summary = summarize(records)
    summary["target_bpp"] = bpp
    summary["passes"] = sum(r["passes"] for r in records) / len(records)
    recipe = codec.recipe
    meta = {"data": getattr(images, "name", ""), "n_images": len(records), "pad": pad, "target_bpp": bpp}
    if recipe is not None:
        meta.update(recipe=recipe.name, recipe_digest=recipe.digest())
    description = recipe.description if recipe is not None else ""
    return EvalResult(name or (recipe.name if recipe is not None else "model"), description, records, summary, meta)
