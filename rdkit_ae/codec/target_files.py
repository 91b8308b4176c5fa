"""``rdkit compress --bpp/--cr/--max-bytes/--psnr``: an image file to an ``.rdk`` file at a target, with its report.

The file-level twin of :func:`rdkit_ae.codec.files.compress_file` for
:func:`rdkit_ae.codec.rate_control.compress_to`: the output is written
atomically once the search has finished, and the report says what was reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdkit_ae.codec import container
from rdkit_ae.codec.coder import Codec
from rdkit_ae.codec.files import Report, _prefixed, _verify, _write
from rdkit_ae.codec.rate import file_rate
from rdkit_ae.codec.rate_control import Target, compress_to
from rdkit_ae.data.sources import read_image
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.metrics import quality


@dataclass
class TargetReport(Report):
    """A :class:`Report` with how rate control met its target (``rate_report``: a ``RateReport``)."""

    rate_report: Any = None

    @property
    def achieved(self) -> str:
        return self.rate_report.achieved if self.rate_report is not None else ""


def compress_file_to(
    codec: Codec,
    source: str | Path,
    output: str | Path,
    target: Target,
    *,
    max_passes: int,
    verify: bool = False,
    max_image_pixels: int | None = None,
) -> TargetReport:
    """Compress an image file at ``target`` to ``output`` (written atomically, only once everything succeeded)."""
    try:
        image, notes = read_image(source, max_pixels=max_image_pixels)
        if not image.flags.writeable:
            image = image.copy()
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    # "--max-bytes 500: the smallest file this model makes of a.png is ...": names the file already
    data, rate_report = compress_to(codec, image, target, max_passes=max_passes, name=str(source))
    try:
        with file_rate(codec.model, rate_report.rate):
            reference = codec.reconstruct(image)
        if verify:
            _verify(codec, data, reference)
        _write(Path(output), data)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    h, w = image.shape[:2]
    scores = quality(image[None], reference[None])[0]
    header = container.header_size(data, max_pixels=codec.max_pixels)
    if not container.claim_allowed(h, w, len(data) - header):
        notes.append(
            f"{len(data):,} bytes for {h * w:,} pixels is below what decoding accepts by default "
            f"({container.PIXELS_PER_BYTE} pixels per byte); decode it with --max-pixels {h * w}"
        )
    return TargetReport(
        str(source), str(output), h, w, len(data), header, scores["psnr"], scores["ssim"], verify, notes,
        rate_report.rate, rate_report,
    )  # fmt: skip
