"""Evaluate a model with real bitstreams: compress -> bytes -> decompress -> metrics.

``evaluate(model, images)`` codes every image to bytes with the model's
quantizer, decodes it, checks that the decoded image equals the eval-mode
forward reconstruction bit for bit, and measures rate (bytes, bpp, CR) and
quality (PSNR, SSIM, MS-SSIM) per image (accounting: :mod:`.results`).
Images of one size that are small (<= 256x256) are coded in batches; larger
ones one at a time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rdkit_ae.checkpoint import load_model
from rdkit_ae.codec.container import pack as pack_rdk
from rdkit_ae.codec.identity import model_id
from rdkit_ae.codec.rate import set_stored_rate, stored_rate
from rdkit_ae.data.sources import to_tensor, to_uint8
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.batching import same_size_batches
from rdkit_ae.evaluation.metrics import bpp_from_bytes, cr_from_bpp, quality
from rdkit_ae.evaluation.padding import DEFAULT_PAD, check_pad, pad_for_eval
from rdkit_ae.evaluation.perceptual import parse_metrics
from rdkit_ae.evaluation.results import EvalResult, summarize
from rdkit_ae.guards import check_model, guard_entropy_coders

__all__ = [
    "BitExactError",
    "BitstreamLayoutError",
    "bytes_per_image",
    "check_operating_points",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_operating_points",
    "trained_operating_points",
]


class BitExactError(RdkitError):
    """decompress(compress(x)) differs from the eval-mode forward reconstruction."""


class BitstreamLayoutError(RdkitError):
    """A quantizer returned strings that are not one bytes object per image per stream."""


def _is_bytes(s: Any) -> bool:
    return isinstance(s, (bytes, bytearray, memoryview))


def bytes_per_image(strings: Any, batch: int) -> list[int]:
    """Sum ``len(s)`` over every stream for each image of a batch.

    A stream is a list with one bytes object per image; quantizers may return
    several streams (e.g. y and z of a hyperprior), possibly nested.
    """
    if isinstance(strings, (list, tuple)) and len(strings) == batch and strings and all(map(_is_bytes, strings)):
        return [len(s) for s in strings]
    if isinstance(strings, (list, tuple)) and strings and not any(map(_is_bytes, strings)):
        totals = [0] * batch
        for child in strings:
            totals = [a + b for a, b in zip(totals, bytes_per_image(child, batch))]
        return totals
    raise BitstreamLayoutError(
        f"the quantizer's strings are not one bytes object per image per stream (batch of {batch}): "
        f"got {type(strings).__name__}" + (f" of {len(strings)}" if isinstance(strings, (list, tuple)) else "")
    )


def _container_packer(model) -> Callable[[dict[str, Any], int], bytes]:
    """``pack(compressed, index) -> bytes``: one image's whole ``.rdk`` file, as ``rdkit compress`` writes it."""
    mid, rate = model_id(model), stored_rate(model)
    return lambda compressed, i: pack_rdk(mid, compressed, index=i, rate=rate)


def _sync(device) -> None:
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
    pad: str = DEFAULT_PAD,
    metrics: Sequence[str] = (),
) -> EvalResult:
    """Compress every image of ``images`` (an :class:`~rdkit_ae.data.ImageSet`) to real bytes and measure it.

    ``model`` is an :class:`~rdkit_ae.model.RDModel`; it is put in eval mode
    for the call (and restored after). Entropy tables are built if missing
    (``update(force=False)``): after changing weights, call
    ``model.update(force=True)`` yourself. ``check_exact`` compares the decoded
    batch with the eval-mode forward pass on the same batch and raises
    :class:`BitExactError` on any difference. ``container`` adds
    ``container_bytes``/``container_bpp``: the size of the whole ``.rdk`` file.
    ``progress(n)`` is called with the number of images done per batch.
    ``pad`` is how images are padded to a size the model codes (see
    :mod:`.padding`): ``"replicate"`` (as ``rdkit compress``) or
    ``"compressai"`` (centred zeros to a multiple of 64, as CompressAI's
    ``eval_model``); it is recorded in ``meta["pad"]``.
    Times are seconds per image: a batch's time divided by its size.
    ``metrics`` adds perceptual metrics by name (:mod:`.perceptual`, e.g. ``("haarpsi", "ms-gmsd")``) to the
    always-computed PSNR, SSIM and MS-SSIM; they are recorded in ``meta["metrics"]``.
    """
    if batch_size < 1:
        raise RdkitError(f"batch size must be at least 1, got {batch_size}")
    if len(images) == 0:
        raise RdkitError(f"no images to evaluate in {getattr(images, 'name', 'the data')}")
    check_pad(pad)
    metrics = parse_metrics(metrics)
    recipe = getattr(model, "recipe", None)
    name = name or (recipe.name if recipe is not None else type(model).__name__)
    description = description or (recipe.description if recipe is not None else "")
    was_training = model.training
    model.to(device).eval()
    model.update(force=False)
    # The same checks and coder guards as `rdkit compress`: crafted tables or NaN weights must not crash or hang it.
    check_model(model, name)
    guard_entropy_coders(model)
    pack = _container_packer(model) if container else None
    records: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            for names, batch in same_size_batches(images, batch_size):
                records += _evaluate_batch(model, names, batch, device, check_exact, pack, pad, metrics)
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
        "pad": pad,
    }
    if metrics:
        meta["metrics"] = list(metrics)
    if recipe is not None:
        meta["recipe"] = recipe.name
        meta["recipe_digest"] = recipe.digest()
    summary = summarize(records)
    rate = stored_rate(model)
    if rate is not None:  # a variable-rate model: its operating point, in meta and in the results JSON
        meta["rate"] = summary["rate"] = rate
        lmbda = getattr(model.latent_codec, "lmbda", None)
        if lmbda is not None:
            meta["lambda"] = summary["lambda"] = float(lmbda)
    return EvalResult(name, description, records, summary, meta)


def _evaluate_batch(
    model, names, batch, device, check_exact, pack, pad=DEFAULT_PAD, metrics=()
) -> list[dict[str, Any]]:
    B, H, W = batch.shape[:3]
    # to_tensor gives a channels-last view; a decoder always sees contiguous
    # latents, so code from a contiguous input or forward and decompress would
    # run the convolutions in different memory formats (last-bit differences).
    x, unpad = pad_for_eval(to_tensor(batch).to(device).contiguous(), pad, model.stride)
    _sync(device)
    t0 = time.perf_counter()
    compressed = model.compress(x)
    _sync(device)
    t1 = time.perf_counter()
    x_hat = unpad(model.decompress(compressed["strings"], compressed["shape"], compressed["size"])["x_hat"])
    x_hat = x_hat.clamp(0, 1)  # a no-op for an RDModel; a model whose decompress does not clamp is compared alike
    _sync(device)
    t2 = time.perf_counter()
    if not bool(torch.isfinite(x_hat).all()):
        raise RdkitError(f"the decoded images (batch starting at {names[0]}) hold NaN or infinite values")
    if check_exact:
        # decompress clamps to [0, 1] (as CompressAI's models do); forward does not (training needs the gradient)
        reference = unpad(model(x)["x_hat"]).clamp(0, 1)
        if reference.shape != x_hat.shape or not torch.equal(reference, x_hat):
            raise BitExactError(_mismatch_message(names, reference, x_hat))
    nbytes = bytes_per_image(compressed["strings"], B)
    scores = quality(batch, to_uint8(x_hat), metrics)
    nominal_bits = model.nominal_bits(x.size(-2), x.size(-1))  # of what was coded (padded)
    out = []
    for i in range(B):
        rec: dict[str, Any] = {"name": names[i], "height": int(H), "width": int(W), "bytes": nbytes[i]}
        rec["bpp"] = bpp_from_bytes(nbytes[i], H, W)
        if pack is not None:
            rec["container_bytes"] = len(pack(compressed, i))
            rec["container_bpp"] = bpp_from_bytes(rec["container_bytes"], H, W)
        rec["cr"] = cr_from_bpp(rec["bpp"])
        rec.update(scores[i])
        rec["encoding_time"] = (t1 - t0) / B
        rec["decoding_time"] = (t2 - t1) / B
        if nominal_bits is not None:
            rec["nominal_bpp"] = nominal_bits / (H * W)
        out.append(rec)
    return out


def _mismatch_message(names, reference, decoded) -> str:
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


def evaluate_checkpoint(
    path: str | Path, images, *, lmbda: float | None = None, rate: float | None = None, **kwargs: Any
) -> EvalResult:
    """Load a checkpoint (safely, entropy tables ready) and :func:`evaluate` it.

    A variable-rate model is evaluated at ``lmbda`` or rate index ``rate``
    (default: its quantizer's operating point, the middle of its range).
    """
    return evaluate_operating_points(path, images, [(lmbda, rate)], **kwargs)[0]


def trained_operating_points(model) -> list[tuple[float | None, float | None]]:
    """Every point a model was trained for, as ``(lmbda, rate index)``: each lambda of a variable-rate model
    by its index (``(None, 0.0)``, ``(None, 1.0)``, ...), else ``[(None, None)]`` (the model as it is)."""
    lambdas = getattr(model.latent_codec, "lambdas", None) if getattr(model, "variable_rate", False) else None
    if not lambdas:
        return [(None, None)]
    return [(None, float(i)) for i in range(len(lambdas))]


def evaluate_operating_points(
    path: str | Path, images, points: Sequence[tuple[float | None, float | None]] | None = None, **kwargs: Any
) -> list[EvalResult]:
    """Load a checkpoint once and :func:`evaluate` it at each ``(lmbda, rate index)`` (``(None, None)``: as is).

    Several points of a variable-rate model make one RD curve from one
    checkpoint; ``points=None`` means every trained one
    (:func:`trained_operating_points`); a fixed-rate model given a lambda or
    rate raises :class:`RdkitError`. ``kwargs`` go to :func:`evaluate`.
    """
    model, recipe, _ = load_model(path, map_location=kwargs.get("device", "cpu"))
    if points is None:
        points = trained_operating_points(model)
    check_operating_points(model, points, str(path))
    results = []
    for lmbda, rate in points:
        if lmbda is not None or rate is not None:
            set_stored_rate(model, lmbda=lmbda, index=rate)
        res = evaluate(model, images, **kwargs)
        res.meta["checkpoint"] = str(path)
        results.append(res)
    return results


def check_operating_points(model, points: Sequence[tuple[float | None, float | None]], source: str) -> None:
    """Refuse, in one line and before any work, lambdas or rate indices this model cannot code at."""
    chosen = [(lmbda, rate) for lmbda, rate in points if lmbda is not None or rate is not None]
    if not chosen:
        return
    if not model.variable_rate:
        option = "--lambda" if chosen[0][0] is not None else "--rate"
        raise RdkitError(f"{option} needs a variable-rate model, but {source} has a single rate")
    before = model.rate
    try:
        for lmbda, rate in chosen:
            try:
                model.set_rate(lmbda=lmbda, index=rate)
            except RdkitError as exc:
                raise RdkitError(f"{source}: {exc}") from None
    finally:
        model.set_rate(index=before)
