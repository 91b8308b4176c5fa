"""``rdkit compress --bpp/--cr/--max-bytes/--psnr``: an image file to an ``.rdk`` file at a target, with its report.

The file-level twin of :func:`rdkit_ae.codec.files.compress_file` for
:func:`rdkit_ae.codec.rate_control.compress_to`: the output is written
atomically once the search has finished, and the report says what was reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdkit_ae.codec.coder import Codec
from rdkit_ae.codec.files import Report, _prefixed, read_source, write_report
from rdkit_ae.codec.rate import file_rate
from rdkit_ae.codec.rate_control import Target, compress_to
from rdkit_ae.errors import RdkitError


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
    image, notes = read_source(source, max_image_pixels)
    # "--max-bytes 500: the smallest file this model makes of a.png is ...": names the file already
    data, rate_report = compress_to(codec, image, target, max_passes=max_passes, name=str(source))
    try:
        with file_rate(codec.model, rate_report.rate):
            reference = codec.reconstruct(image)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    report = write_report(codec, source, output, image, data, reference, verify, notes, rate_report.rate)
    return TargetReport(**vars(report), rate_report=rate_report)
