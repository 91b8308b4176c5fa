"""Shared helpers for the codec tests (no tests here): checkpoints, images, references, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.codec import fixed_threads
from rdkit_ae.data.sources import to_tensor, to_uint8
from rdkit_ae.model import build_model

REPO = Path(__file__).resolve().parents[1]
ZOO = ("conv-mse", "conv-hybrid", "conv-ste", "factorized", "hyperprior")
# Small versions of the zoo's quantizer families, for fuzzing (fast decodes).
TINY = {
    "uniform": ("conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=4"]),
    "factorized": ("factorized", ["encoder.N=8", "encoder.M=12"]),
    "hyperprior": ("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]),
}


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients and waves plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(2, 9, 2).tolist() + [rng.uniform(0, 6.3)]
        wave = np.sin(xx / max(width, 1) * fx + phase) * np.cos(yy / max(height, 1) * fy)
        ramp = (xx / max(width, 1) + yy / max(height, 1)) / 2
        channels.append(128 + 70 * wave + 40 * (ramp - 0.5) + rng.normal(0, 3, (height, width)))
    return np.clip(np.stack(channels, -1), 0, 255).round().astype(np.uint8)


def make_checkpoint(path: Path, recipe: str, overrides=(), seed: int = 0, update: bool = True) -> Path:
    """An untrained (random-weight) checkpoint; ``update`` stores the entropy tables in it."""
    torch.manual_seed(seed)
    model = build_model(recipe, list(overrides))
    model.eval()
    if update:
        model.update(force=True)
    save_checkpoint(path, model, model.recipe)
    return path


def reference(model, image: np.ndarray) -> np.ndarray:
    """The evaluator's reconstruction: eval-mode forward of the single image, rounded to uint8.

    Computed with the codec's thread count: the decoder's arithmetic is only
    comparable bit for bit with a forward pass made the same way.
    """
    with fixed_threads():
        x = to_tensor(image.copy()).contiguous()
        return to_uint8(model.eval()(x)["x_hat"])[0]


def run_python(code: str, *args: str, threads: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` in a fresh process (optionally pinned to a thread count)."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def run_rdkit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real ``rdkit`` console entry point in a fresh process."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return subprocess.run(
        [sys.executable, "-m", "rdkit_ae", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="session")
def zoo_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    return {name: make_checkpoint(root / f"{name}.pt", name) for name in ZOO}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {key: make_checkpoint(root / f"{key}.pt", recipe, overrides) for key, (recipe, overrides) in TINY.items()}
