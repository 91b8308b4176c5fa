"""``rdkit compare``'s numbers: each image coded by Pillow codecs and by each model at one target bpp (or CR).

Every result is a real file, decoded back: WebP/JPEG through Pillow at the
quality whose whole file is the largest not above the target (as
``cwebp -size`` aims), found by bisection over quality 0..100; a
variable-rate model through rate control (:mod:`rdkit_ae.codec.rate_control`:
the closest whole ``.rdk`` file, within 0.5%); a fixed-rate model at its own
rate (its tile says so). bpp and CR count every byte of the file. Metrics are
measured on the whole decoded image, not on the crop that the figure shows
(:mod:`.compare_figure` draws it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.crops import Box, check_box, detail_box
from rdkit_ae.evaluation.metrics import CodedSize, bpp_from_bytes

DEFAULT_METRICS = ("psnr", "ms-ssim", "haarpsi")


@dataclass
class Tile(CodedSize):
    """One coded version of an image (or the original: raw 24 bpp, no metrics)."""

    codec: str  # "original", "WebP", "JPEG" or the model's label
    kind: str  # "original", "classical" or "model"
    setting: str  # "quality 37", "rate 2.314", "fixed rate", ""
    nbytes: int
    height: int
    width: int
    metrics: dict[str, float | None]
    decoded: np.ndarray = field(repr=False)

    def record(self) -> dict[str, Any]:
        """The tile's numbers for the JSON and CSV (``bytes``: the whole file)."""
        return {
            "codec": self.codec,
            "kind": self.kind,
            "setting": self.setting,
            "bytes": self.nbytes,
            "bpp": self.bpp,
            "cr": self.cr,
            **self.metrics,
        }


@dataclass
class Row:
    """One image: its name, the original, the box the figure shows and its tiles (the original first)."""

    name: str
    image: np.ndarray = field(repr=False)
    box: Box
    tiles: list[Tile]


def metric_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"psnr,ms-ssim,haarpsi"`` -> the metrics' --metrics names, in order (one-line error on unknown ones)."""
    from rdkit_ae.evaluation.perceptual import metric_for

    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(metric_for(p).name for p in parts if p.strip()))
    if not names:
        raise RdkitError("--metrics: name at least one metric, e.g. psnr")
    return names


def _scores(original: np.ndarray, decoded: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    from rdkit_ae.evaluation.metrics import quality
    from rdkit_ae.evaluation.perceptual import ALWAYS, METRICS

    extra = [n for n in names if n not in ALWAYS]
    row = quality(original[None], decoded[None], extra)[0]
    return {n: row.get(METRICS[n].key) for n in names}


def classical_at(image: np.ndarray, codec: str, goal_bytes: float, name: str, option: str = "") -> tuple[bytes, int]:
    """``(file, quality)``: the largest Pillow file not above ``goal_bytes`` (bisection over quality, assuming
    sizes grow with it; every file tried is measured, so the result is never above the goal)."""
    from rdkit_ae.evaluation import classic

    label = classic.get_codec(codec).label
    files: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in files:
            files[q] = classic.encode(image, codec, q)
        return len(files[q])

    h, w = image.shape[:2]
    if size(0) > goal_bytes:
        bpp = bpp_from_bytes(size(0), h, w)
        raise RdkitError(
            f"{label} cannot reach {option or f'{goal_bytes * 8 / (h * w):.4g} bpp'} on {name}: its smallest file is "
            f"{bpp:.4f} bpp (CR {24 / bpp:.2f}) at quality 0"
        )
    lo, hi = 0, 100
    if size(hi) <= goal_bytes:
        return files[hi], hi
    while hi - lo > 1:  # size(lo) <= goal < size(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= goal_bytes else (lo, mid)
    best = max((q for q, f in files.items() if len(f) <= goal_bytes), key=lambda q: (len(files[q]), q))
    return files[best], best


@dataclass
class Model:
    """A loaded checkpoint and the label its tiles carry."""

    label: str
    path: Path
    codec: Any


def load_models(paths: Sequence[str | Path]) -> list[Model]:
    """Load each checkpoint once (one-line errors); labels are recipe names, made unique with the folder."""
    from rdkit_ae.codec import Codec

    loaded = []
    for p in map(Path, paths):
        if not p.is_file():
            raise RdkitError(f"checkpoint not found: {p}")
        codec = Codec.load(p)
        loaded.append(Model(getattr(codec.recipe, "name", None) or p.stem, p, codec))
    labels = [m.label for m in loaded]
    for m in loaded:
        if labels.count(m.label) > 1:
            m.label = f"{m.label} ({m.path.parent.name or m.path.stem})"
    return loaded


def model_at(model: Model, image: np.ndarray, target: Any, name: str, max_passes: int) -> tuple[bytes, str]:
    """``(file, setting)``: a variable-rate model at ``target`` (rate control), a fixed-rate one as it is."""
    from rdkit_ae.codec import rate_control

    if not getattr(model.codec.model, "variable_rate", False):
        return model.codec.compress(image), "fixed rate"
    try:
        data, report = rate_control.compress_to(model.codec, image, target, max_passes=max_passes, name=name)
    except RdkitError as exc:
        raise RdkitError(f"{model.label} ({model.path}): {exc}") from None
    return data, f"rate {report.rate:.4g}"


def _tile(codec: str, kind: str, setting: str, data: bytes, decoded: np.ndarray, image, names) -> Tile:
    if decoded.shape != image.shape:
        raise RdkitError(f"{codec} decoded a {image.shape} image to {decoded.shape}")
    h, w = image.shape[:2]
    return Tile(codec, kind, setting, len(data), h, w, _scores(image, decoded, names), decoded)


def compare_image(
    name: str,
    image: np.ndarray,
    models: Sequence[Model],
    target: Any,
    *,
    codecs: Sequence[str] = ("webp",),
    metrics: Sequence[str] = DEFAULT_METRICS,
    crop: int = 64,
    box: Box | None = None,
    max_passes: int = 12,
) -> Row:
    """One image's row: the original, each Pillow codec, then each model, all at ``target``
    (:class:`~rdkit_ae.codec.rate_control.Target`, kind bpp or cr)."""
    from rdkit_ae.evaluation import classic

    h, w = image.shape[:2]
    shown = check_box(box, h, w, name) if box is not None else detail_box(image, crop)
    tiles = [Tile("original", "original", "", h * w * 3, h, w, {}, image)]
    goal = target.goal_bytes(h * w)
    for c in codecs:
        data, q = classical_at(image, c, goal, name, target.option)
        decoded = np.array(classic.decode(data))  # a writable copy (Pillow's arrays are read-only)
        tiles.append(_tile(classic.get_codec(c).label, "classical", f"quality {q}", data, decoded, image, metrics))
    for m in models:
        data, setting = model_at(m, image, target, name, max_passes)
        tiles.append(_tile(m.label, "model", setting, data, m.codec.decompress(data, trusted=True), image, metrics))
    return Row(name, image, shown, tiles)


def check_request(target: Any, codecs: Sequence[str], metrics: Sequence[str]) -> None:
    """Refuse, before any work, a target other than bpp/CR, a codec this Pillow cannot write, or a learned
    metric without its backbone weights (one line each)."""
    from rdkit_ae.evaluation import classic

    if target.kind not in ("bpp", "cr"):
        raise RdkitError(f"compare takes a --bpp or --cr target, not {target.option}")
    for c in codecs:
        if not classic.available(c):
            raise RdkitError(f"this Pillow cannot write {classic.get_codec(c).label}")
    if "lpips" in metrics:
        from rdkit_ae.evaluation.learned_metrics import load_lpips

        load_lpips()
    if "dists" in metrics:
        from rdkit_ae.evaluation.dists import load_dists

        load_dists()
