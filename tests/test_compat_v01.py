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
from rdkit_ae.codec import Codec, container

DATA = Path(__file__).parent / "data" / "v0.1"
NAMES = ["conv-mse", "factorized", "hyperprior"]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", NAMES)
def test_v01_files_decode_and_reencode(name):
    payload = load_checkpoint(DATA / f"{name}.pt")
    assert "weights_sha256" not in payload  # written before digests existed
    codec = Codec.load(DATA / f"{name}.pt")  # converted to the portable path on load
    old = (DATA / f"{name}.rdk").read_bytes()
    assert old[2] == container.VERSION
    # A version 1 file decodes on the float path it was written with: 0.1's own pixels.
    assert np.array_equal(codec.decompress(old), _png(DATA / f"{name}.decoded.png"))
    new = codec.compress(_png(DATA / "image.png"))
    assert new[2] == container.VERSION_CHECKED  # same model id: the integer networks are derived, not identity
    assert new[3:7] == old[3:7]
    old_p, new_p = container.unpack(old), container.unpack(new)
    if name != "hyperprior":  # no side parameters: the same symbols and strings, only the version and check differ
        assert new_p.strings == old_p.strings and len(new) == len(old)
    assert np.array_equal(codec.decompress(new), codec.reconstruct(_png(DATA / "image.png")))
