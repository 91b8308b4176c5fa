"""Bjontegaard deltas between two rate-distortion curves (VCEG-M33), with numpy.

BD-rate: fit log(rate) as a function of PSNR for each curve, integrate both
over the PSNR range the curves share, and turn the mean difference into a
percentage, ``(exp(mean(log R_test - log R_anchor)) - 1) * 100``. Negative
means the test curve needs fewer bits than the anchor for the same quality.
BD-PSNR: fit PSNR as a function of log(rate), integrate over the shared
log-rate range: the mean PSNR difference in dB (positive: test is better).

Fits:
- ``cubic`` (the standard): a cubic polynomial through each curve, used when
  both curves have at least 4 points;
- ``linear``: piecewise-linear interpolation in log-rate (exact integration
  of the polyline), used when a curve has 2 or 3 points, where a cubic is
  underdetermined. With fewer than 2 points nothing is computed.

Curves are cleaned first: points with a non-positive rate or a non-finite
value are dropped, and so are dominated points (a higher rate without a higher
PSNR than some cheaper point), so each curve is strictly increasing and the
fits are functions. Nothing is extrapolated: when the ranges do not overlap
the delta is None and the result says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

METHODS = ("auto", "cubic", "linear")


@dataclass
class Curve:
    """A cleaned RD curve: strictly increasing rate and quality."""

    rate: np.ndarray  # bpp (any rate unit works: BD-rate is a ratio)
    quality: np.ndarray  # PSNR dB (or any quality where higher is better)
    dropped: int = 0  # points removed as invalid or dominated

    @property
    def log_rate(self) -> np.ndarray:
        return np.log(self.rate)


@dataclass
class BDResult:
    bd_rate: float | None  # percent
    bd_psnr: float | None  # dB
    method: str
    quality_overlap: tuple[float, float] | None  # PSNR interval used for BD-rate
    rate_overlap: tuple[float, float] | None  # rate interval used for BD-PSNR
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def clean_curve(rates: Sequence[float], quality: Sequence[float]) -> Curve:
    """Sort by rate and keep the upper envelope (each point must improve on all cheaper ones)."""
    if len(rates) != len(quality):
        raise ValueError(f"a curve needs as many rates as qualities ({len(rates)} vs {len(quality)})")
    pts = [
        (float(r), float(q))
        for r, q in zip(rates, quality)
        if r is not None and q is not None and math.isfinite(float(r)) and math.isfinite(float(q)) and float(r) > 0
    ]
    pts.sort(key=lambda p: (p[0], -p[1]))
    kept: list[tuple[float, float]] = []
    for r, q in pts:
        if not kept or (q > kept[-1][1] and r > kept[-1][0]):
            kept.append((r, q))
    arr = np.array(kept, dtype=np.float64).reshape(-1, 2)
    return Curve(arr[:, 0], arr[:, 1], dropped=len(rates) - len(kept))


def _integral_cubic(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    poly = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(poly, hi) - np.polyval(poly, lo))


def _integral_linear(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral of the polyline through (x, y) (x increasing) over [lo, hi] within its span."""
    knots = np.concatenate([[lo], x[(x > lo) & (x < hi)], [hi]])
    vals = np.interp(knots, x, y)
    return float(np.sum((knots[1:] - knots[:-1]) * (vals[1:] + vals[:-1]) / 2.0))


def _mean_difference(xa, ya, xt, yt, method: str) -> tuple[float | None, tuple[float, float] | None]:
    """Mean of (y_test - y_anchor) over the shared x range, or (None, None) when there is none."""
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    if not hi > lo:
        return None, None
    integral = _integral_cubic if method == "cubic" else _integral_linear
    return (integral(xt, yt, lo, hi) - integral(xa, ya, lo, hi)) / (hi - lo), (float(lo), float(hi))


def _span(values: np.ndarray, unit: str, fmt: str = ".2f") -> str:
    return f"{values.min():{fmt}}-{values.max():{fmt}} {unit}"


def bjontegaard(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "auto",
) -> BDResult:
    """BD-rate (%) and BD-PSNR (dB) of a test curve against an anchor curve."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    a, t = clean_curve(anchor_rate, anchor_psnr), clean_curve(test_rate, test_psnr)
    notes = [
        f"{who}: {c.dropped} point(s) dropped (invalid or dominated: no PSNR gain for more bits)"
        for who, c in (("anchor", a), ("test", t))
        if c.dropped
    ]
    n = min(len(a.rate), len(t.rate))
    if n < 2:
        notes.append("a curve has fewer than 2 usable points: not computed")
        return BDResult(None, None, "none", None, None, notes)
    if method == "auto":
        method = "cubic" if n >= 4 else "linear"
    elif method == "cubic" and n < 4:
        raise ValueError("the cubic fit needs at least 4 points per curve")
    if method == "linear" and n < 4:
        notes.append(
            f"fewer than 4 points ({len(a.rate)} anchor, {len(t.rate)} test): "
            "piecewise-linear in log-rate instead of a cubic"
        )

    d_log_rate, q_overlap = _mean_difference(a.quality, a.log_rate, t.quality, t.log_rate, method)
    bd_rate = None if d_log_rate is None else (math.exp(d_log_rate) - 1.0) * 100.0
    if q_overlap is None:
        notes.append(
            f"no PSNR overlap (test {_span(t.quality, 'dB')}, anchor {_span(a.quality, 'dB')}): "
            "BD-rate not computed, no extrapolation"
        )
    elif q_overlap != (a.quality.min(), a.quality.max()) or q_overlap != (t.quality.min(), t.quality.max()):
        notes.append(
            f"BD-rate over the PSNR overlap {q_overlap[0]:.2f}-{q_overlap[1]:.2f} dB only "
            f"(test {_span(t.quality, 'dB')}, anchor {_span(a.quality, 'dB')})"
        )

    d_psnr, lr_overlap = _mean_difference(a.log_rate, a.quality, t.log_rate, t.quality, method)
    rate_overlap = None if lr_overlap is None else (math.exp(lr_overlap[0]), math.exp(lr_overlap[1]))
    if rate_overlap is None:
        notes.append(
            f"no rate overlap (test {_span(t.rate, 'bpp', '.3f')}, anchor {_span(a.rate, 'bpp', '.3f')}): "
            "BD-PSNR not computed"
        )
    elif lr_overlap != (a.log_rate.min(), a.log_rate.max()) or lr_overlap != (t.log_rate.min(), t.log_rate.max()):
        notes.append(f"BD-PSNR over the rate overlap {rate_overlap[0]:.3f}-{rate_overlap[1]:.3f} bpp only")
    return BDResult(bd_rate, d_psnr, method, q_overlap, rate_overlap, notes)


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr, method: str = "auto") -> float | None:
    """BD-rate in percent (None when the curves share no PSNR range)."""
    return bjontegaard(anchor_rate, anchor_psnr, test_rate, test_psnr, method).bd_rate


def bd_psnr(anchor_rate, anchor_psnr, test_rate, test_psnr, method: str = "auto") -> float | None:
    """BD-PSNR in dB (None when the curves share no rate range)."""
    return bjontegaard(anchor_rate, anchor_psnr, test_rate, test_psnr, method).bd_psnr
