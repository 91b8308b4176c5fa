"""Bjontegaard deltas between two rate-distortion curves, computed by the ``bjontegaard`` package.

BD-rate: log-rate as a function of PSNR for each curve, integrated over the
PSNR range both curves cover; the mean difference as a percentage,
``(10**mean(log10 R_test - log10 R_anchor) - 1) * 100``. Negative: the test
curve needs fewer bits than the anchor for the same quality. BD-PSNR: PSNR
as a function of log-rate, integrated over the shared rate range; the mean
difference in dB (positive: the test is better).

Interpolation (``method``, named in every result and table), from the
``bjontegaard`` package (Herglotz et al., https://github.com/FAU-LMS/bjontegaard):

- ``cubic``: VCEG-M33's cubic polynomial fit through each curve (needs at
  least 4 points per curve);
- ``pchip``: piecewise cubic Hermite interpolation, as in the current JVET
  common-test-conditions spreadsheet (2 points or more; linear with 2);
- ``akima``: Akima's piecewise cubic interpolation (linear with 2 points);
- ``auto`` (default): ``cubic`` when both curves have 4 points or more,
  else ``pchip``.

Curves are cleaned first: points with a non-positive rate or a non-finite
value are dropped, and so are dominated points (a higher rate without a higher
PSNR than some cheaper point), so each curve is strictly increasing and the
fits are functions. Nothing is extrapolated: the integrals run over the
overlap only; when the ranges do not overlap the delta is None and the notes
say why.

A rate window (``bjontegaard(..., window=(1.0, 3.0))``) restricts both
curves to the rates of interest: the points inside it plus the nearest one
outside on each side (:func:`rate_window`), so the fits span the window
without being shaped by far-away points. :func:`psnr_at` reads a curve's
PSNR at one rate (e.g. 2.0 bpp, compression ratio 12), interpolating
linearly between the measured points on each side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import bjontegaard as bd
import numpy as np

METHODS = ("auto", "cubic", "pchip", "akima")
bjontegaard_version = bd.__version__
MIN_POINTS = {"cubic": 4, "pchip": 2, "akima": 2}


@dataclass
class Curve:
    """A cleaned RD curve: strictly increasing rate and quality."""

    rate: np.ndarray  # bpp (any rate unit works: BD-rate is a ratio)
    quality: np.ndarray  # PSNR dB (or any quality where higher is better)
    dropped: int = 0  # points removed as invalid or dominated

    @property
    def log_rate(self) -> np.ndarray:
        return np.log10(self.rate)


@dataclass
class BDResult:
    bd_rate: float | None  # percent
    bd_psnr: float | None  # dB
    method: str
    quality_overlap: tuple[float, float] | None  # PSNR interval used for BD-rate
    rate_overlap: tuple[float, float] | None  # rate interval used for BD-PSNR
    notes: list[str] = field(default_factory=list)
    window: tuple[float, float] | None = None  # the rate window the curves were cut to (see rate_window)

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


def _overlap(a: np.ndarray, t: np.ndarray) -> tuple[float, float] | None:
    lo, hi = max(a.min(), t.min()), min(a.max(), t.max())
    return (float(lo), float(hi)) if hi > lo else None


def _whole(overlap: tuple[float, float], a: np.ndarray, t: np.ndarray) -> bool:
    return overlap == (a.min(), a.max()) and overlap == (t.min(), t.max())


def _span(values: np.ndarray, unit: str, fmt: str = ".2f") -> str:
    return f"{values.min():{fmt}}-{values.max():{fmt}} {unit}"


def _delta(fn, a: Curve, t: Curve, method: str) -> float:
    # min_overlap=0: the package would only warn; the overlap is reported in our notes instead
    value = fn(a.rate, a.quality, t.rate, t.quality, method, require_matching_points=False, min_overlap=0)
    return float(value)


def _choose(method: str, a: Curve, t: Curve, notes: list[str]) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n = min(len(a.rate), len(t.rate))
    if method == "auto":
        method = "cubic" if n >= MIN_POINTS["cubic"] else "pchip"
        if method == "pchip":
            notes.append(
                f"fewer than 4 points ({len(a.rate)} anchor, {len(t.rate)} test): "
                "piecewise cubic (pchip) instead of the cubic fit"
            )
    elif n < MIN_POINTS[method]:
        raise ValueError(f"the {method} interpolation needs at least {MIN_POINTS[method]} points per curve")
    return method


def _sorted(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(rates) != len(quality):
        raise ValueError(f"a curve needs as many rates as qualities ({len(rates)} vs {len(quality)})")
    r, q = np.asarray(rates, dtype=np.float64).reshape(-1), np.asarray(quality, dtype=np.float64).reshape(-1)
    order = np.argsort(r, kind="stable")
    return r[order], q[order]


def _check_window(window: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in window)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"a rate window needs 0 <= low < high, got {window!r}")
    return lo, hi


def rate_window(
    rates: Sequence[float], quality: Sequence[float], window: tuple[float, float]
) -> tuple[list[float], list[float]]:
    """The points of a curve (sorted by rate) inside ``window`` plus the nearest one outside on each side."""
    lo, hi = _check_window(window)
    r, q = _sorted(rates, quality)
    first = max(int(np.searchsorted(r, lo, side="left")) - 1, 0)
    stop = min(int(np.searchsorted(r, hi, side="right")) + 1, len(r))
    return r[first:stop].tolist(), q[first:stop].tolist()


def psnr_at(rates: Sequence[float], quality: Sequence[float], rate: float) -> float | None:
    """A curve's quality at ``rate``: linear between the measured points on each side; None outside the curve."""
    r, q = _sorted(rates, quality)
    keep = np.isfinite(r) & np.isfinite(q)
    r, q = r[keep], q[keep]
    if len(r) == 0 or not r[0] <= rate <= r[-1]:
        return None
    return float(np.interp(rate, r, q))


def bjontegaard(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "auto",
    window: tuple[float, float] | None = None,
) -> BDResult:
    """BD-rate (%) and BD-PSNR (dB) of a test curve against an anchor curve.

    ``window`` (rates ``(low, high)``): both curves are first cut to
    :func:`rate_window` (recorded in ``BDResult.window``).
    """
    if window is not None:
        window = _check_window(window)
        anchor_rate, anchor_psnr = rate_window(anchor_rate, anchor_psnr, window)
        test_rate, test_psnr = rate_window(test_rate, test_psnr, window)
    res = _bjontegaard(anchor_rate, anchor_psnr, test_rate, test_psnr, method)
    res.window = window
    return res


def _bjontegaard(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str,
) -> BDResult:
    a, t = clean_curve(anchor_rate, anchor_psnr), clean_curve(test_rate, test_psnr)
    notes = [
        f"{who}: {c.dropped} point(s) dropped (invalid or dominated: no PSNR gain for more bits)"
        for who, c in (("anchor", a), ("test", t))
        if c.dropped
    ]
    if min(len(a.rate), len(t.rate)) < 2:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        notes.append("a curve has fewer than 2 usable points: not computed")
        return BDResult(None, None, "none", None, None, notes)
    method = _choose(method, a, t, notes)

    q_overlap = _overlap(a.quality, t.quality)
    rate = None if q_overlap is None else _delta(bd.bd_rate, a, t, method)
    if q_overlap is None:
        notes.append(
            f"no PSNR overlap (test {_span(t.quality, 'dB')}, anchor {_span(a.quality, 'dB')}): "
            "BD-rate not computed, no extrapolation"
        )
    elif not _whole(q_overlap, a.quality, t.quality):
        notes.append(
            f"BD-rate over the PSNR overlap {q_overlap[0]:.2f}-{q_overlap[1]:.2f} dB only "
            f"(test {_span(t.quality, 'dB')}, anchor {_span(a.quality, 'dB')})"
        )

    lr_overlap = _overlap(a.log_rate, t.log_rate)
    psnr = None if lr_overlap is None else _delta(bd.bd_psnr, a, t, method)
    rate_overlap = None if lr_overlap is None else (10 ** lr_overlap[0], 10 ** lr_overlap[1])
    if rate_overlap is None:
        notes.append(
            f"no rate overlap (test {_span(t.rate, 'bpp', '.3f')}, anchor {_span(a.rate, 'bpp', '.3f')}): "
            "BD-PSNR not computed"
        )
    elif lr_overlap is not None and not _whole(lr_overlap, a.log_rate, t.log_rate):
        notes.append(f"BD-PSNR over the rate overlap {rate_overlap[0]:.3f}-{rate_overlap[1]:.3f} bpp only")
    return BDResult(rate, psnr, method, q_overlap, rate_overlap, notes)


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr, method: str = "auto") -> float | None:
    """BD-rate in percent (None when the curves share no PSNR range)."""
    return bjontegaard(anchor_rate, anchor_psnr, test_rate, test_psnr, method).bd_rate


def bd_psnr(anchor_rate, anchor_psnr, test_rate, test_psnr, method: str = "auto") -> float | None:
    """BD-PSNR in dB (None when the curves share no rate range)."""
    return bjontegaard(anchor_rate, anchor_psnr, test_rate, test_psnr, method).bd_psnr
