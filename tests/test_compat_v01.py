"""Files written by rdkit-ae 0.1 (tests/data/v0.1, made by its released code) still load and decode.

The checkpoints hold small random-weight models of the three 0.1 quantizer
families; the ``.rdk`` files are 0.1's encoding of ``image.png`` (20x23, so
padding is exercised), and ``*.decoded.png`` 0.1's decoding of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.codec import Codec

DATA = Path(__file__).parent / "data" / "v0.1"
NAMES = ["conv-mse", "factorized", "hyperprior"]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", NAMES)
def test_v01_files_decode_and_encode_identically(name):
    payload = load_checkpoint(DATA / f"{name}.pt")
    assert "weights_sha256" not in payload  # written before digests existed
    codec = Codec.load(DATA / f"{name}.pt")
    old = (DATA / f"{name}.rdk").read_bytes()
    assert np.array_equal(codec.decompress(old), _png(DATA / f"{name}.decoded.png"))
    assert codec.compress(_png(DATA / "image.png")) == old
