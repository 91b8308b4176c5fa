"""Shared fixtures. Tests make their own small data; nothing here downloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Under pytest-xdist (CI runs `pytest`, whose addopts spread the tests over the cores) every worker
# and the processes it starts use one thread: two workers with default threads on 2 cores slow each
# other down about 10x. Set before torch is imported; tests that choose threads pass them explicitly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# Tiny versions of the zoo recipes: same plugins, a fraction of the compute.
TINY = {
    "conv-mse": ["encoder.channels=[8, 16]", "encoder.latent_channels=4"],
    "conv-hybrid": ["encoder.channels=[8, 16]", "encoder.latent_channels=4"],
    "conv-ste": ["encoder.channels=[8, 16]", "encoder.latent_channels=4"],
    "factorized": ["encoder.N=8", "encoder.M=12"],
    "hyperprior": ["encoder.N=8", "encoder.M=12", "quantizer.N=8"],
}


@pytest.fixture
def tiny_overrides():
    return TINY


@pytest.fixture
def shared_dir() -> Path:
    return SHARED


@pytest.fixture
def python_env(tmp_path):
    """Environment for subprocesses: the current interpreter's, plus nothing surprising."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


@pytest.fixture
def python_exe() -> str:
    return sys.executable


@pytest.fixture()
def data(tmp_path):
    """A small .npz of smooth synthetic images (tmp_path/data/d.npz), as the bench tests' specs expect."""
    import numpy as np
    from synthetic import smooth_images

    path = tmp_path / "data" / "d.npz"
    path.parent.mkdir()
    np.savez(path, x=smooth_images(40))
    return path
