"""A training run's text and figure outputs: metrics.jsonl, run.json, loss_curves.png, comparison.png.

Figures use matplotlib's Agg backend, imported only when a figure is drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdkit_ae.files import atomic_write_bytes, json_safe


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, one line per (possibly partial) epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: everything before it is good
        return out

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Rewrite the file with only the records ``predicate`` accepts (a resumed run drops what it redoes)."""
        kept = [r for r in self.read() if predicate(r)]
        text = "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda f: f.write(text.encode("utf-8")))
        return kept


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def loss_terms(metrics: Sequence[dict[str, Any]]) -> list[str]:
    """Term names present as train_<name> or val_<name> (total 'loss' first)."""
    names: list[str] = []
    skip = {"psnr", "ssim", "bpp"}
    for rec in metrics:
        for key in rec:
            for prefix in ("train_", "val_"):
                if key.startswith(prefix):
                    name = key[len(prefix) :]
                    if name not in names and name not in skip:
                        names.append(name)
    return sorted(names, key=lambda n: (n != "loss", n == "aux", names.index(n)))


def plot_loss_curves(metrics: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """One panel per loss term: training and validation value per epoch."""
    plt = _pyplot()
    names = loss_terms(metrics) or ["loss"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    x = [r.get("epoch_progress", r.get("epoch")) for r in metrics]
    for ax, name in zip(axes.flat, names):
        for prefix, style in (("train_", "-o"), ("val_", "-s")):
            pts = [(xi, r.get(prefix + name)) for xi, r in zip(x, metrics)]
            pts = [(a, b) for a, b in pts if a is not None and b is not None]
            if pts:
                ax.plot(*zip(*pts), style, markersize=3, label=prefix[:-1])
        values = [r.get(p + name) for r in metrics for p in ("train_", "val_")]
        if values and all(v is not None and v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path, plt)


def plot_comparison(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | Path,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> None:
    """Originals (top row) above their reconstructions (bottom row); uint8 (N, H, W, 3)."""
    plt = _pyplot()
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.8), squeeze=False)
    for i in range(n):
        for row, img in ((0, originals[i]), (1, reconstructions[i])):
            ax = axes[row, i]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if labels is not None:
            axes[1, i].set_xlabel(labels[i], fontsize=7)
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path, plt)


def _save_figure(fig, path: str | Path, plt) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
