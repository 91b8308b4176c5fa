"""Perceptual full-reference metrics chosen with ``--metrics`` / a bench spec's ``metrics = [...]``.

The weight-free ones (HaarPSI, MS-GMSD, VSI, MDSI) come from `piq`
(https://github.com/photosynthesis-team/piq), computed on the 8-bit images
scaled to [0, 1] (``data_range=1``). LPIPS and DISTS need an ImageNet
backbone (:mod:`.learned_metrics`, :mod:`.dists`). Each metric gives one value per image, or
None where the image is too small for it (see ``min_side``), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rdkit_ae.errors import RdkitError


@dataclass(frozen=True)
class Metric:
    name: str  # what --metrics takes
    key: str  # the per-image record / summary key
    compressai: str  # the results JSON key
    higher_is_better: bool
    value_range: str
    min_side: int  # smaller images give None
    learned: bool = False  # needs backbone weights (rdkit_ae.evaluation.learned_metrics)


METRICS = {
    m.name: m
    for m in (
        Metric("psnr", "psnr", "psnr-rgb", True, "dB, 0..inf", 1),
        Metric("ssim", "ssim", "ssim-rgb", True, "-1..1", 11),
        Metric("ms-ssim", "ms_ssim", "ms-ssim-rgb", True, "0..1", 161),
        Metric("haarpsi", "haarpsi", "haarpsi-rgb", True, "0..1", 16),
        Metric("ms-gmsd", "ms_gmsd", "ms-gmsd-rgb", False, "0..~0.35 (0: identical)", 17),
        Metric("vsi", "vsi", "vsi-rgb", True, "0..1", 1),
        Metric("mdsi", "mdsi", "mdsi-rgb", False, "0..~0.6 (0: identical)", 1),
        Metric("lpips", "lpips", "lpips-rgb", False, "0..~1 (0: identical)", 16, learned=True),
        Metric("dists", "dists", "dists-rgb", False, "0..~1 (0: identical)", 32, learned=True),
    )
}
ALWAYS = ("psnr", "ssim", "ms-ssim")  # computed in every evaluation, as before --metrics existed
BY_KEY = {m.key: m for m in METRICS.values()}
BY_COMPRESSAI = {m.compressai: m for m in METRICS.values()}


def parse_metrics(value: str | Sequence[str] | None, option: str = "--metrics") -> tuple[str, ...]:
    """``"psnr,haarpsi"`` or ``["psnr", "haarpsi"]`` -> the extra metrics to compute, in order (one-line error
    on an unknown name). psnr, ssim and ms-ssim are always computed and may be listed."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    names = [p.strip().lower().replace("_", "-") for p in parts if p.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise RdkitError(f"{option}: unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return tuple(n for n in dict.fromkeys(names) if n not in ALWAYS)


def metric_for(name: str) -> Metric:
    """A metric by its --metrics name, record key or results JSON key (one-line error otherwise)."""
    text = name.strip().lower()
    found = METRICS.get(text.replace("_", "-")) or BY_KEY.get(text) or BY_COMPRESSAI.get(text)
    if found is None:
        raise RdkitError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return found


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def weight_free(name: str, original: np.ndarray, decoded: np.ndarray) -> list[float | None]:
    """One weight-free piq metric per image of uint8 (N, H, W, 3) batches; None below its ``min_side``."""
    import piq
    import torch

    metric = METRICS[name]
    if min(original.shape[1:3]) < metric.min_side:
        return [None] * len(original)
    fn = {"haarpsi": piq.haarpsi, "ms-gmsd": piq.multi_scale_gmsd, "vsi": piq.vsi, "mdsi": piq.mdsi}[name]
    with torch.no_grad():
        out = fn(_tensor(original), _tensor(decoded), data_range=1.0, reduction="none")
    return [float(v) for v in out.reshape(-1)]


def perceptual(original: np.ndarray, decoded: np.ndarray, names: Sequence[str]) -> list[dict[str, float | None]]:
    """``[{record key: value}, ...]`` for the named extra metrics (psnr, ssim, ms-ssim are done elsewhere)."""
    rows: list[dict[str, float | None]] = [{} for _ in range(len(original))]
    for name in names:
        metric = METRICS[name]
        if metric.name in ALWAYS:
            continue
        if metric.name == "dists":
            from rdkit_ae.evaluation.dists import dists_metric

            values = dists_metric(original, decoded)
        elif metric.learned:
            from rdkit_ae.evaluation.learned_metrics import learned_metric

            values = learned_metric(name, original, decoded)
        else:
            values = weight_free(name, original, decoded)
        for row, v in zip(rows, values):
            row[metric.key] = v
    return rows
