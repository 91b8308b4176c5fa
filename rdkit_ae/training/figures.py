"""Figures of a run: loss_curves.png (per epoch, also on Ctrl-C) and comparison.png (best model, at the end).

matplotlib's Agg backend is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from rdkit_ae.data.datasets import ImageDataset
from rdkit_ae.data.sources import to_uint8
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext
from rdkit_ae.training.runlog import METRICS, MetricsLog

LOSS_CURVES, COMPARISON = "loss_curves.png", "comparison.png"
COMPARISON_IMAGES = 8


class Figures(Callback):
    """Draws the loss curves when a run stops (also on Ctrl-C) and the comparison of the best model at the end."""

    builtin = True

    def on_interrupt(self, ctx: TrainContext) -> None:
        if ctx.info.is_main:
            self.loss_curves(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        if not ctx.info.is_main:
            return
        self.loss_curves(ctx)
        if ctx.final_model is not None:
            comparison(ctx.final_model, ctx.val_set, ctx.out / COMPARISON, ctx.recipe.name)

    @staticmethod
    def loss_curves(ctx: TrainContext) -> None:
        metrics = MetricsLog(ctx.out / METRICS).read()
        if metrics:
            plot_loss_curves(metrics, ctx.out / LOSS_CURVES, title=ctx.recipe.name)


@torch.no_grad()
def comparison(model: nn.Module, val_set: ImageDataset, path: Path, name: str) -> None:
    """The first validation patches above the model's 8-bit reconstructions, each labelled with its PSNR."""
    n = min(COMPARISON_IMAGES, len(val_set))
    x = val_set.__getitems__(list(range(n)))
    was = model.training
    model.eval()
    x_hat = model(x.to(next(model.parameters()).device))["x_hat"].cpu()
    model.train(was)
    orig, rec = to_uint8(x), to_uint8(x_hat)
    mse = ((orig.astype(np.float64) - rec.astype(np.float64)) ** 2).reshape(n, -1).mean(1)
    labels = [f"{10 * math.log10(255**2 / m):.1f} dB" if m > 0 else "inf dB" for m in mse]
    plot_comparison(orig, rec, path, labels, title=f"{name}: originals above reconstructions")


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
