"""rd.png: rate-distortion curves, PSNR and SSIM against bpp, with CR on a second axis.

Takes CompressAI-style entries (``{"name", "results": {"bpp", "psnr-rgb",
"ssim-rgb"}}``). Uses matplotlib's object API with the Agg canvas, so it
neither needs a display nor changes the caller's pyplot backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdkit_ae.evaluation.metrics import BITS_PER_PIXEL_RGB

# Learned curves solid, classical codecs dashed (as compressai.utils.plot does), external dotted.
LINESTYLES = {"learned": "-", "classical": "--", "external": ":"}
CR_TICKS = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
PANELS = (("psnr-rgb", "PSNR (dB)"), ("ssim-rgb", "SSIM"))
# Every metric a panel can show (``metrics=``), e.g. ("haarpsi-rgb",) for rdkit bench's rd-haarpsi.png.
ALL_PANELS = (
    *PANELS,
    ("ms-ssim-rgb", "MS-SSIM"),
    ("haarpsi-rgb", "HaarPSI (higher is better)"),
    ("ms-gmsd-rgb", "MS-GMSD (lower is better)"),
    ("vsi-rgb", "VSI (higher is better)"),
    ("mdsi-rgb", "MDSI (lower is better)"),
    ("lpips-rgb", "LPIPS (lower is better)"),
    ("dists-rgb", "DISTS (lower is better)"),
)


def _cr(bpp):
    bpp = np.asarray(bpp, dtype=float)
    return np.divide(BITS_PER_PIXEL_RGB, bpp, out=np.full_like(bpp, np.inf), where=bpp > 0)


def plot_rd(
    entries: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str = "",
    kinds: dict[str, str] | None = None,
    dpi: int = 150,
    metrics: Sequence[str] = ("psnr-rgb", "ssim-rgb"),
) -> Path:
    """Draw one line per curve in a PSNR panel and an SSIM panel (``metrics``: which panels, any results key of
    ``ALL_PANELS``, e.g. ``("haarpsi-rgb",)``); save as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    kinds = kinds or {}
    panels = [(key, label) for key, label in ALL_PANELS if key in metrics]
    if not panels:
        raise ValueError(f"metrics must name some of {', '.join(k for k, _ in ALL_PANELS)}, got {list(metrics)!r}")
    fig = Figure(figsize=(6.5 * len(panels), 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    all_bpp = [b for e in entries for b in e["results"].get("bpp", []) if b and b > 0]
    for ax, (key, ylabel) in zip(axes, panels):
        drawn = 0
        for i, e in enumerate(entries):
            r = e["results"]
            if key not in r or not r.get("bpp"):
                continue
            order = np.argsort(r["bpp"])
            x, y = np.asarray(r["bpp"])[order], np.asarray(r[key])[order]
            ax.plot(
                x,
                y,
                marker="o",
                markersize=3.5,
                linewidth=1.3,
                linestyle=LINESTYLES.get(kinds.get(e["name"], "learned"), "-"),
                label=e["name"],
                color=f"C{i % 10}",
            )
            drawn += 1
        ax.set_xscale("log")
        ax.set_xlabel("rate (bpp, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        if all_bpp:
            ax.set_xlim(min(all_bpp) / 1.15, max(all_bpp) * 1.15)
        top = ax.secondary_xaxis("top", functions=(_cr, _cr))  # CR = 24 / bpp is its own inverse
        top.set_xlabel("compression ratio (24 / bpp)")
        top.xaxis.set_major_locator(FixedLocator(CR_TICKS))
        top.xaxis.set_major_formatter(plain)
        top.xaxis.set_minor_formatter(NullFormatter())
        if drawn:
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no {ylabel} values", transform=ax.transAxes, ha="center", va="center")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
