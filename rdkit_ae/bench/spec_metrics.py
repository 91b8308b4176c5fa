"""A sweep spec's ``metrics = [...]`` (perceptual metrics to add) and ``bd_metric`` (the BD figures' quality)."""

from __future__ import annotations

from typing import Any

from rdkit_ae.bench.spec_tables import SpecError
from rdkit_ae.errors import RdkitError


def spec_metrics(raw: dict[str, Any], source: str) -> tuple[tuple[str, ...], str]:
    """``(extra metrics, bd_metric name)``; ``bd_metric`` (default psnr) is added to the metrics when needed."""
    from rdkit_ae.evaluation.perceptual import ALWAYS, metric_for, parse_metrics

    value = raw.get("metrics", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f'{source}: metrics must be a list of metric names, e.g. ["haarpsi", "ms-gmsd"]')
    bd = raw.get("bd_metric", "psnr")
    if not isinstance(bd, str):
        raise SpecError(f'{source}: bd_metric must be a metric name, e.g. "haarpsi"')
    try:
        metrics = parse_metrics(value, "metrics")
        bd_name = metric_for(bd).name
    except RdkitError as exc:
        raise SpecError(f"{source}: {exc}") from None
    if bd_name not in ALWAYS and bd_name not in metrics:
        metrics = (*metrics, bd_name)
    if "lpips" in metrics or "dists" in metrics:  # the backbone must be here before the first training
        from rdkit_ae.evaluation.dists import dists_backbone_path
        from rdkit_ae.evaluation.learned_metrics import lpips_backbone_path

        try:
            for name, find in (("lpips", lpips_backbone_path), ("dists", dists_backbone_path)):
                if name in metrics:
                    find()
        except RdkitError as exc:
            raise SpecError(f"{source}: metrics: {exc}") from None
    return metrics, bd_name
