"""Rate control for variable-rate models: code one image at a target size, bpp, CR or PSNR.

A variable-rate model codes at any rate position ``t`` in ``[0, K-1]``
(``Codec.set_rate(rate=t)``) and files grow with ``t``. :func:`compress_to`
searches ``t`` per image, each pass one real compress (and, for a PSNR
target, one decode of its bytes), interpolating in log-bytes (PSNR: linear)
inside a bracket that always shrinks. Growth with ``t`` is usual, not
guaranteed: the best pass seen is kept, and a ``max_bytes`` result is never
above its ceiling. ``.rdk`` files store any float32 ``t``, so decoding needs
no option. Targets a model cannot reach raise a one-line :class:`RdkitError`
naming the nearest value it reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.metrics import CodedSize, bpp_from_bytes, psnr

DEFAULT_PASSES = 12
MAX_PASSES = 64
BYTES_TOLERANCE = 0.005  # bpp/cr: stop within 0.5% of the target bytes; max_bytes: within 1% below the ceiling
PSNR_TOLERANCE = 0.05  # dB above the target
MIN_STEP = 1e-4  # a bracket narrower than this (in rate position) is done: sizes jump there, no pass lands between
WORD_BYTES = 4  # file sizes move in steps of whole entropy-coder words
EDGE = 0.1  # an interpolated step stays this fraction of the bracket away from its ends


@dataclass(frozen=True)
class Target:
    """What to hit: ``kind`` is "max_bytes" (ceiling), "bpp", "cr" (closest) or "psnr" (floor, dB)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("max_bytes", "bpp", "cr", "psnr"):
            raise RdkitError(f"unknown rate-control target {self.kind!r}; use max_bytes, bpp, cr or psnr")
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise RdkitError(f"{self.option}: the target must be a positive finite number")
        if self.kind == "max_bytes" and v != int(v):
            raise RdkitError(f"{self.option}: give a whole number of bytes")

    @property
    def option(self) -> str:
        """``--max-bytes 500``: the target as ``rdkit compress`` spells it."""
        return f"--{self.kind.replace('_', '-')} {self.value:g}"

    def goal_bytes(self, pixels: int) -> float:
        """The file size aimed at (max_bytes, bpp, cr); CR is 24 / bpp."""
        bpp = {"bpp": self.value, "cr": 24 / self.value}.get(self.kind)
        return float(self.value) if bpp is None else bpp * pixels / 8


@dataclass
class Pass:
    rate: float
    nbytes: int
    psnr: float | None = None


@dataclass
class RateReport(CodedSize):
    """How :func:`compress_to` met its target: the chosen pass, the passes made and what they reached."""

    target: Target
    rate: float
    nbytes: int
    height: int
    width: int
    psnr: float | None
    passes: list[Pass] = field(default_factory=list)

    @property
    def achieved(self) -> str:
        """``--max-bytes 500: 497 bytes (rate 1.8421, 6 passes)``: the target and what was reached."""
        got = {
            "max_bytes": f"{self.nbytes:,} bytes",
            "bpp": f"{self.bpp:.4f} bpp",
            "cr": f"CR {self.cr:.2f}",
            "psnr": f"{self.psnr:.2f} dB" if self.psnr is not None else "?",
        }[self.target.kind]
        n = len(self.passes)
        return f"{self.target.option}: {got} (rate {self.rate:.6g}, {n} pass{'es' if n != 1 else ''})"


def target_of(**given: float | None) -> Target:
    """The one target given (``bpp=``, ``cr=``, ``max_bytes=``, ``psnr=``); none or several raise in one line."""
    chosen = [(k, v) for k, v in given.items() if v is not None]
    if len(chosen) != 1:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise RdkitError(f"give exactly one rate-control target ({names}), got {len(chosen)}")
    return Target(*chosen[0])


def rate_span(codec: Any) -> float:
    """K-1, the highest rate position of a variable-rate codec; a fixed-rate one raises in one line."""
    model = codec.model
    if not getattr(model, "variable_rate", False):
        raise RdkitError(f"rate control needs a variable-rate model, but {codec.source} has a single rate")
    lambdas = getattr(model.latent_codec, "lambdas", None)
    if not lambdas or len(lambdas) < 2:
        raise RdkitError(f"rate control needs the quantizer's trained lambdas, but {codec.source} has none")
    return float(len(lambdas) - 1)


def compress_to(
    codec: Any,
    image: np.ndarray,
    target: Target,
    *,
    max_passes: int = DEFAULT_PASSES,
    name: str = "this image",
    size_of: Callable[[bytes], int] = len,
) -> tuple[bytes, RateReport]:
    """Compress ``image`` at the rate position meeting ``target``; the codec's own position is restored after.

    ``size_of`` measures a file (default: all its bytes, as ``--max-bytes``
    and ``rdkit compress``'s bpp do; the bench passes the streams' bytes).
    """
    if isinstance(max_passes, bool) or not isinstance(max_passes, int) or not 2 <= max_passes <= MAX_PASSES:
        raise RdkitError(f"the number of passes must be an integer in 2..{MAX_PASSES}, got {max_passes!r}")
    top = rate_span(codec)
    before = codec.model.rate
    try:
        search = _Search(codec, image, target, size_of, name)
        data, best = search.run(top, max_passes)
    finally:
        codec.model.set_rate(index=before)
    h, w = image.shape[:2]
    return data, RateReport(target, best.rate, best.nbytes, h, w, best.psnr, search.passes)


class _Search:
    """The passes of one image: ``measure(t)`` compresses at ``t``; the bracket and the best pass so far."""

    def __init__(self, codec: Any, image: np.ndarray, target: Target, size_of: Callable[[bytes], int], name: str):
        self.codec, self.image, self.target, self.size_of, self.name = codec, image, target, size_of, name
        self.goal = target.value if target.kind == "psnr" else target.goal_bytes(image.shape[0] * image.shape[1])
        self.passes: list[Pass] = []
        self.files: dict[float, bytes] = {}

    def measure(self, t: float) -> Pass:
        rate = self.codec.set_rate(rate=t)
        data = self.codec.compress(self.image)
        p = Pass(rate, int(self.size_of(data)))
        if self.target.kind == "psnr":
            decoded = self.codec.decompress(data, trusted=True)
            p.psnr = psnr(self.image[None], decoded[None])[0]
        self.passes.append(p)
        self.files[rate] = data
        return p

    def value(self, p: Pass) -> float:
        return float(p.psnr if self.target.kind == "psnr" else p.nbytes)  # type: ignore[arg-type]

    def feasible(self, p: Pass) -> bool:
        kind, v = self.target.kind, self.value(p)
        if kind == "max_bytes":
            return v <= self.goal
        if kind == "psnr":
            return v >= self.goal
        return True

    def better(self, p: Pass, q: Pass | None) -> bool:
        """Whether pass ``p`` beats the best so far ``q``."""
        if not self.feasible(p):
            return False
        if q is None:
            return True
        kind = self.target.kind
        if kind == "max_bytes":
            return p.nbytes > q.nbytes
        if kind == "psnr":
            return p.nbytes < q.nbytes
        return abs(p.nbytes - self.goal) < abs(q.nbytes - self.goal)

    def done(self, best: Pass | None) -> bool:
        if best is None:
            return False
        kind = self.target.kind
        if kind == "max_bytes":
            return best.nbytes >= self.goal * (1 - 2 * BYTES_TOLERANCE)
        if kind == "psnr":
            return self.value(best) - self.goal <= PSNR_TOLERANCE
        return abs(best.nbytes - self.goal) <= self.goal * BYTES_TOLERANCE

    def run(self, top: float, max_passes: int) -> tuple[bytes, Pass]:
        hi = self.measure(top)
        if self.target.kind == "max_bytes" and self.feasible(hi):
            return self.files[hi.rate], hi  # even the highest rate fits: the ceiling is not binding
        lo = self.measure(0.0)
        self._check_reachable(lo, hi)
        if self.target.kind == "psnr" and self.feasible(lo):
            return self.files[lo.rate], lo  # even the lowest rate is good enough: the smallest file
        best = None
        for p in (lo, hi):
            best = p if self.better(p, best) else best
        stuck = False
        while len(self.passes) < max_passes and not self.done(best) and not self._closed(lo, hi):
            p = self.measure(self._midpoint(lo, hi) if stuck else self._next(lo, hi))
            if p.rate in (lo.rate, hi.rate):
                break  # the bracket is one float32 wide
            best = p if self.better(p, best) else best
            # A pass that moves an end without changing its value lands on a plateau (a jump in sizes
            # near the goal): interpolation would creep along it, so the next pass halves the bracket.
            if self._below(p):
                stuck, lo = self.value(p) == self.value(lo), p
            else:
                stuck, hi = self.value(p) == self.value(hi), p
        if best is None:  # not reached: lo is feasible for every kind after _check_reachable
            raise RdkitError(f"{self.target.option}: no pass met the target for {self.name}")
        return self.files[best.rate], best

    def _closed(self, lo: Pass, hi: Pass) -> bool:
        """Whether no better pass is likely strictly inside the bracket: it is narrower than ``MIN_STEP``,
        or its sizes are one entropy-coder word apart (rANS writes whole 4-byte words per stream)."""
        if hi.rate - lo.rate <= MIN_STEP:
            return True
        return self.target.kind != "psnr" and hi.nbytes - lo.nbytes <= WORD_BYTES

    def _below(self, p: Pass) -> bool:
        """Whether ``p`` is on the low side of the goal (the bracket's new low end)."""
        return self.value(p) < self.goal if self.target.kind == "psnr" else self.value(p) <= self.goal

    @staticmethod
    def _midpoint(lo: Pass, hi: Pass) -> float:
        return lo.rate + 0.5 * (hi.rate - lo.rate)

    def _next(self, lo: Pass, hi: Pass) -> float:
        """Interpolate the target between the bracket's ends (log bytes, or dB), kept off the ends."""
        a, b, g = self.value(lo), self.value(hi), self.goal
        if self.target.kind != "psnr":
            a, b, g = math.log(max(a, 1.0)), math.log(max(b, 1.0)), math.log(max(g, 1.0))
        frac = (g - a) / (b - a) if b > a else 0.5
        frac = min(max(frac, EDGE), 1 - EDGE)
        return lo.rate + frac * (hi.rate - lo.rate)

    def _check_reachable(self, lo: Pass, hi: Pass) -> None:
        """One line naming the nearest value the model reaches, if the target is outside [lo, hi]."""
        kind, opt, name = self.target.kind, self.target.option, self.name
        h, w = self.image.shape[:2]
        if kind == "max_bytes" and lo.nbytes > self.goal:
            msg = f"the smallest file this model makes of {name} is {lo.nbytes:,} bytes (rate 0)"
        elif kind == "psnr" and not self.feasible(hi):
            msg = f"the highest PSNR this model reaches on {name} is {hi.psnr:.2f} dB (rate {hi.rate:g})"
        elif kind in ("bpp", "cr") and lo.nbytes > self.goal * (1 + BYTES_TOLERANCE):
            msg = self._extreme("lowest", lo, h, w)
        elif kind in ("bpp", "cr") and hi.nbytes < self.goal * (1 - BYTES_TOLERANCE):
            msg = self._extreme("highest", hi, h, w)
        else:
            return
        raise RdkitError(f"{opt}: {msg}")

    def _extreme(self, which: str, p: Pass, h: int, w: int) -> str:
        bpp = bpp_from_bytes(p.nbytes, h, w)
        if self.target.kind == "cr":
            extreme = "highest" if which == "lowest" else "lowest"
            return f"the {extreme} CR this model reaches on {self.name} is {24 / bpp:.2f} (rate {p.rate:g})"
        return f"the {which} bpp this model reaches on {self.name} is {bpp:.4f} (rate {p.rate:g})"
