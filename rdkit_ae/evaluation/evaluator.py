"""Evaluate a model with real bitstreams: compress -> bytes -> decompress -> metrics.

``evaluate(model, images)`` codes every image to bytes with the model's
quantizer, decodes it, checks that the decoded image equals the eval-mode
forward reconstruction bit for bit, and measures rate (bytes, bpp, CR) and
quality (PSNR, SSIM, MS-SSIM) per image.

Rate accounting: ``bytes`` is the sum of ``len(s)`` over every string of the
image (all streams); ``bpp = 8 * bytes / (H * W)`` on the original, unpadded
size; ``cr = 24 / bpp`` (8-bit RGB). Images of one size that are small
(<= 256x256) are coded in batches; larger ones one at a time.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.files import write_json

BITS_PER_PIXEL_RGB = 24.0
MAX_BATCHED_PIXELS = 256 * 256  # larger images are coded one at a time (memory, and Kodak sizes vary)


class BitExactError(RdkitError):
    """decompress(compress(x)) differs from the eval-mode forward reconstruction."""


class BitstreamLayoutError(RdkitError):
    """A quantizer returned strings that are not one bytes object per image per stream."""


# -- results ------------------------------------------------------------------
def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def cr_from_bpp(bpp: float | None) -> float | None:
    """Compression ratio of 8-bit RGB: 24 / bpp (None for a zero or unknown rate)."""
    return BITS_PER_PIXEL_RGB / bpp if bpp else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-image records.

    Means over images for bpp, psnr, ssim, ms_ssim and times (images without a
    value, e.g. MS-SSIM on small images, are left out of that mean);
    ``cr = 24 / mean bpp`` (not the mean of per-image CRs);
    ``psnr_of_mean_mse`` is the PSNR of the MSE averaged over all images.
    """
    from rdkit_ae.evaluation.metrics import psnr_from_mse

    if not records:
        raise RdkitError("nothing to summarize: no images were evaluated")
    s: dict[str, Any] = {"n_images": len(records)}
    s["bytes"] = _mean([r["bytes"] for r in records])
    s["total_bytes"] = int(sum(r["bytes"] for r in records))
    s["bpp"] = _mean([r["bpp"] for r in records])
    s["cr"] = cr_from_bpp(s["bpp"])
    s["psnr"] = _mean([r["psnr"] for r in records])
    s["mse"] = _mean([r["mse"] for r in records])
    s["psnr_of_mean_mse"] = psnr_from_mse(s["mse"])
    s["ssim"] = _mean([r.get("ssim") for r in records])
    s["ms_ssim"] = _mean([r.get("ms_ssim") for r in records])
    s["ms_ssim_images"] = sum(r.get("ms_ssim") is not None for r in records)
    s["encoding_time"] = _mean([r["encoding_time"] for r in records])
    s["decoding_time"] = _mean([r["decoding_time"] for r in records])
    if all("container_bytes" in r for r in records):
        s["container_bytes"] = _mean([r["container_bytes"] for r in records])
        s["container_bpp"] = _mean([r["container_bpp"] for r in records])
        s["container_cr"] = cr_from_bpp(s["container_bpp"])
    if all(r.get("nominal_bpp") is not None for r in records):
        s["nominal_bpp"] = _mean([r["nominal_bpp"] for r in records])
        s["nominal_cr"] = cr_from_bpp(s["nominal_bpp"])
    return s


# CompressAI results keys <- our summary keys. CompressAI's own tools
# (compressai.utils.plot) read "bpp" and "<metric>-rgb" lists.
COMPRESSAI_KEYS = (
    ("bpp", "bpp"),
    ("psnr-rgb", "psnr"),
    ("ssim-rgb", "ssim"),
    ("ms-ssim-rgb", "ms_ssim"),
    ("cr", "cr"),
    ("encoding_time", "encoding_time"),
    ("decoding_time", "decoding_time"),
    ("psnr-of-mean-mse", "psnr_of_mean_mse"),
    ("container-bpp", "container_bpp"),
    ("nominal-bpp", "nominal_bpp"),
)


def compressai_entry(name: str, description: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One curve in CompressAI's results schema: one list element per point.

    A metric is listed only when every point has it (e.g. no "ms-ssim-rgb" on
    32x32 images), so the lists stay numeric and aligned with "bpp".
    """
    results: dict[str, list[float]] = {}
    for key, ours in COMPRESSAI_KEYS:
        values = [s.get(ours) for s in summaries]
        if values and all(v is not None for v in values):
            results[key] = [float(v) for v in values]
    return {"name": name, "description": description, "results": results}


def write_records_csv(
    path: str | Path, records: Sequence[dict[str, Any]], leading: dict[str, Any] | None = None
) -> None:
    """Write dict rows; columns are the union of keys in first-seen order."""
    rows = [{**(leading or {}), **r} for r in records]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})


@dataclass
class EvalResult:
    """Per-image ``records``, their ``summary`` and how they were made (``meta``)."""

    name: str
    description: str
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_compressai(self) -> dict[str, Any]:
        """CompressAI's results schema with this evaluation as its single point."""
        return compressai_entry(self.name, self.description, [self.summary])

    def write_csv(self, path: str | Path) -> None:
        write_records_csv(path, self.records)

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_compressai())


# -- the evaluator ------------------------------------------------------------
def _batches(images, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (names, uint8 (B, H, W, 3)): consecutive images of one small size together."""
    from rdkit_ae.data.sources import iter_images

    names: list[str] = []
    arrays: list[np.ndarray] = []
    for name, img in iter_images(images):
        h, w = img.shape[:2]
        fits = arrays and arrays[0].shape == img.shape and len(arrays) < batch_size and h * w <= MAX_BATCHED_PIXELS
        if arrays and not fits:
            yield names, np.stack(arrays)
            names, arrays = [], []
        names.append(name)
        arrays.append(img)
    if arrays:
        yield names, np.stack(arrays)


def bytes_per_image(strings: Any, batch: int) -> list[int]:
    """Sum ``len(s)`` over every stream for each image of a batch.

    A stream is a list with one bytes object per image; quantizers may return
    several streams (e.g. y and z of a hyperprior), possibly nested.
    """

    def is_bytes(s: Any) -> bool:
        return isinstance(s, (bytes, bytearray, memoryview))

    if isinstance(strings, (list, tuple)) and len(strings) == batch and strings and all(is_bytes(s) for s in strings):
        return [len(s) for s in strings]
    if isinstance(strings, (list, tuple)) and strings and not any(is_bytes(s) for s in strings):
        totals = [0] * batch
        for child in strings:
            totals = [a + b for a, b in zip(totals, bytes_per_image(child, batch))]
        return totals
    raise BitstreamLayoutError(
        f"the quantizer's strings are not one bytes object per image per stream (batch of {batch}): got {type(strings).__name__}"
        + (f" of {len(strings)}" if isinstance(strings, (list, tuple)) else "")
    )


def _container_packer(model) -> Callable[[dict[str, Any], int], bytes]:
    """``pack(compressed, index) -> bytes``: one image's whole ``.rdk`` file, as ``rdkit compress`` writes it."""
    from rdkit_ae.codec.coder import model_id
    from rdkit_ae.codec.container import pack

    mid = model_id(model)
    return lambda compressed, i: pack(mid, compressed, index=i)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model,
    images,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    name: str | None = None,
    description: str = "",
    check_exact: bool = True,
    container: bool = True,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Compress every image of ``images`` (an :class:`~rdkit_ae.data.ImageSet`) to real bytes and measure it.

    ``model`` is an :class:`~rdkit_ae.model.RDModel`; it is put in eval mode
    for the call (and restored after). Entropy tables are built if missing
    (``update(force=False)``): after changing weights, call
    ``model.update(force=True)`` yourself. ``check_exact`` compares the decoded
    batch with the eval-mode forward pass on the same batch and raises
    :class:`BitExactError` on any difference. ``container`` adds
    ``container_bytes``/``container_bpp`` when :mod:`rdkit_ae.container`
    exists. ``progress(n)`` is called with the number of images done per batch.
    Times are seconds per image: a batch's time divided by its size.
    """
    import torch

    from rdkit_ae.data.sources import to_tensor, to_uint8
    from rdkit_ae.evaluation.metrics import quality

    if batch_size < 1:
        raise RdkitError(f"batch size must be at least 1, got {batch_size}")
    if len(images) == 0:
        raise RdkitError(f"no images to evaluate in {getattr(images, 'name', 'the data')}")
    recipe = getattr(model, "recipe", None)
    name = name or (recipe.name if recipe is not None else type(model).__name__)
    description = description or (recipe.description if recipe is not None else "")
    was_training = model.training
    model.to(device).eval()
    model.update(force=False)
    pack = _container_packer(model) if container else None
    records: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            for names, batch in _batches(images, batch_size):
                records += _evaluate_batch(model, names, batch, device, check_exact, pack, to_tensor, to_uint8, quality)
                if progress is not None:
                    progress(len(names))
    finally:
        model.train(was_training)
    meta = {
        "data": getattr(images, "name", ""),
        "n_images": len(records),
        "batch_size": batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bit_exact_checked": bool(check_exact),
    }
    if recipe is not None:
        meta["recipe"] = recipe.name
        meta["recipe_digest"] = recipe.digest()
    return EvalResult(name, description, records, summarize(records), meta)


def _evaluate_batch(
    model, names, batch, device, check_exact, pack, to_tensor, to_uint8, quality
) -> list[dict[str, Any]]:
    import torch

    B, H, W = batch.shape[:3]
    # to_tensor gives a channels-last view; a decoder always sees contiguous
    # latents, so code from a contiguous input or forward and decompress would
    # run the convolutions in different memory formats (last-bit differences).
    x = to_tensor(batch).to(device).contiguous()
    _sync(device)
    t0 = time.perf_counter()
    compressed = model.compress(x)
    _sync(device)
    t1 = time.perf_counter()
    x_hat = model.decompress(compressed["strings"], compressed["shape"], compressed["size"])["x_hat"]
    _sync(device)
    t2 = time.perf_counter()
    if check_exact:
        reference = model(x)["x_hat"]
        if reference.shape != x_hat.shape or not torch.equal(reference, x_hat):
            raise BitExactError(_mismatch_message(names, reference, x_hat))
    nbytes = bytes_per_image(compressed["strings"], B)
    decoded = to_uint8(x_hat)
    scores = quality(batch, decoded)
    nominal_bits = model.nominal_bits(H, W)
    out = []
    for i in range(B):
        rec: dict[str, Any] = {"name": names[i], "height": int(H), "width": int(W), "bytes": nbytes[i]}
        rec["bpp"] = 8.0 * nbytes[i] / (H * W)
        if pack is not None:
            rec["container_bytes"] = len(pack(compressed, i))
            rec["container_bpp"] = 8.0 * rec["container_bytes"] / (H * W)
        rec["cr"] = cr_from_bpp(rec["bpp"])
        rec.update(scores[i])
        rec["encoding_time"] = (t1 - t0) / B
        rec["decoding_time"] = (t2 - t1) / B
        if nominal_bits is not None:
            rec["nominal_bpp"] = nominal_bits / (H * W)
        out.append(rec)
    return out


def _mismatch_message(names, reference, decoded) -> str:
    import torch

    where = f"batch of {len(names)} starting at {names[0]}"
    if reference.shape != decoded.shape:
        return (
            f"BIT-EXACT CHECK FAILED ({where}): decoded shape {tuple(decoded.shape)} != forward shape "
            f"{tuple(reference.shape)}; the encoder and decoder disagree, so these bitstreams cannot be trusted"
        )
    diff = (reference - decoded).abs().flatten(1)
    bad = int((diff > 0).any(dim=1).sum()) if diff.numel() else 0
    worst = float(torch.nan_to_num(diff, nan=float("inf")).max()) if diff.numel() else 0.0
    return (
        f"BIT-EXACT CHECK FAILED ({where}): decompress(compress(x)) differs from the eval-mode forward "
        f"reconstruction on {bad} of {len(names)} images (max abs diff {worst:.3g} on [0, 1]); the encoder and "
        "decoder disagree, so these bitstreams cannot be trusted"
    )


# -- checkpoints ----------------------------------------------------------------
def evaluate_checkpoint(path: str | Path, images, **kwargs: Any) -> EvalResult:
    """Load a checkpoint (safely, entropy tables ready) and :func:`evaluate` it."""
    from rdkit_ae.checkpoint import load_model

    model, recipe, _ = load_model(path, map_location=kwargs.get("device", "cpu"))
    res = evaluate(model, images, **kwargs)
    res.meta["checkpoint"] = str(path)
    return res


def results_curve(
    results: Sequence[EvalResult], name: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """Several evaluations (e.g. one per checkpoint) as the points of one CompressAI curve, like
    ``compressai.utils.eval_model`` does with several checkpoints."""
    if not results:
        raise RdkitError("no evaluations to combine")
    names = list(dict.fromkeys(r.name for r in results))
    descriptions = list(dict.fromkeys(r.description for r in results if r.description))
    return compressai_entry(
        name or "+".join(names),
        description if description is not None else "; ".join(descriptions),
        [r.summary for r in results],
    )
