"""Evaluation results: per-image records, their summary, and CompressAI's results schema (JSON) and CSV.

Rate accounting: ``bytes`` is the sum of ``len(s)`` over every string of the
image (all streams); ``bpp = 8 * bytes / (H * W)`` on the original, unpadded
size; ``cr = 24 / bpp`` (8-bit RGB).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.metrics import cr_from_bpp, psnr_from_mse
from rdkit_ae.files import atomic_write_text, write_json


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-image records.

    Means over images for bpp, psnr, ssim, ms_ssim and times (images without a
    value, e.g. MS-SSIM on small images, are left out of that mean);
    ``cr = 24 / mean bpp`` (not the mean of per-image CRs);
    ``psnr_of_mean_mse`` is the PSNR of the MSE averaged over all images.
    """
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
    for key in PERCEPTUAL_KEYS:  # means over the images that have a value; absent when none was asked for
        if any(key in r for r in records):
            s[key] = _mean([r.get(key) for r in records])
            s[f"{key}_images"] = sum(r.get(key) is not None for r in records)
    if all("container_bytes" in r for r in records):
        s["container_bytes"] = _mean([r["container_bytes"] for r in records])
        s["container_bpp"] = _mean([r["container_bpp"] for r in records])
        s["container_cr"] = cr_from_bpp(s["container_bpp"])
    if all(r.get("nominal_bpp") is not None for r in records):
        s["nominal_bpp"] = _mean([r["nominal_bpp"] for r in records])
        s["nominal_cr"] = cr_from_bpp(s["nominal_bpp"])
    return s


PERCEPTUAL_KEYS = ("haarpsi", "ms_gmsd", "vsi", "mdsi", "lpips", "dists")  # --metrics (rdkit_ae.evaluation.perceptual)

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
    *((f"{k.replace('_', '-')}-rgb", k) for k in PERCEPTUAL_KEYS),
    ("rate", "rate"),  # a variable-rate model's operating point (rate position and its lambda)
    ("lambda", "lambda"),
)


def compressai_entry(
    name: str, description: str, summaries: Sequence[dict[str, Any]], padding: str | None = None
) -> dict[str, Any]:
    """One curve in CompressAI's results schema: one list element per point.

    A metric is listed only when every point has it (e.g. no "ms-ssim-rgb" on
    32x32 images), so the lists stay numeric and aligned with "bpp". ``padding``
    (how a learned model's evaluation padded the images) is added as a
    top-level key when given; CompressAI's tools ignore it.
    """
    results: dict[str, list[float]] = {}
    for key, ours in COMPRESSAI_KEYS:
        values = [s.get(ours) for s in summaries]
        present = [float(v) for v in values if v is not None]
        if values and len(present) == len(values):
            results[key] = present
    entry: dict[str, Any] = {"name": name, "description": description, "results": results}
    if padding is not None:
        entry["padding"] = padding
    return entry


def write_records_csv(
    path: str | Path, records: Sequence[dict[str, Any]], leading: dict[str, Any] | None = None
) -> None:
    """Write dict rows (atomically); columns are the union of keys in first-seen order."""
    rows = [{**(leading or {}), **r} for r in records]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


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
        return compressai_entry(self.name, self.description, [self.summary], self.meta.get("pad"))

    def write_csv(self, path: str | Path) -> None:
        write_records_csv(path, self.records)

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_compressai())


def results_curve(
    results: Sequence[EvalResult], name: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """Several evaluations (e.g. one per checkpoint) as the points of one CompressAI curve, like
    ``compressai.utils.eval_model`` does with several checkpoints."""
    if not results:
        raise RdkitError("no evaluations to combine")
    names = list(dict.fromkeys(r.name for r in results))
    descriptions = list(dict.fromkeys(r.description for r in results if r.description))
    pads = list(dict.fromkeys(str(r.meta["pad"]) for r in results if "pad" in r.meta))
    return compressai_entry(
        name or "+".join(names),
        description if description is not None else "; ".join(descriptions),
        [r.summary for r in results],
        "+".join(pads) or None,
    )
