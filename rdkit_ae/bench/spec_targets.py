"""The ``targets = { bpp = [...] }`` key of a ``[[model]]`` entry, checked (a leaf module: no bench imports).

A variable-rate model is evaluated at exactly these bpp values by rate
control per image (:mod:`rdkit_ae.bench.targets`).
"""

from __future__ import annotations

import math
from typing import Any

from rdkit_ae.errors import RdkitError


def target_bpps(value: Any, where: str, error: type[RdkitError] = RdkitError) -> list[float]:
    """``{ bpp = [1.0, 2.0] }`` as its values; anything else raises ``error`` in one line naming ``where``."""
    values = value.get("bpp") if isinstance(value, dict) and list(value) == ["bpp"] else None
    ok = isinstance(values, list) and values and all(_positive(v) for v in values)
    if not ok or len(set(values)) != len(values):  # type: ignore[arg-type]
        raise error(f"{where} must be {{ bpp = [...] }}, an array of distinct positive numbers, got {value!r}")
    return [float(v) for v in values]  # type: ignore[union-attr]


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
