"""The fast-decode recipe: a fast-vr variant whose promise is fewer decode MACs, with the same portable files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from torch.utils.flop_counter import FlopCounterMode

from rdkit_ae import load_recipe
from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.codec import Codec
from rdkit_ae.model import build_model

IMAGE = smooth_images(1, 64, 96, seed=3)[0]


def _codec(name: str, tmp_path) -> Codec:
    torch.manual_seed(0)
    model = build_model(name)
    model.eval().update(force=True)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model, model.recipe)
    return Codec.load(path)


def _decode_macs(codec: Codec, data: bytes) -> float:
    with FlopCounterMode(display=False) as counter:
        codec.decompress(data)
    return counter.get_total_flops() / 2


def test_fast_decode_extends_fast_vr_with_larger_blocks_and_narrower_networks():
    fast, base = load_recipe("fast-decode"), load_recipe("fast-vr")
    assert fast["encoder"]["factor"] == 2 * base["encoder"]["factor"]
    assert fast["encoder"]["channels"] < base["encoder"]["channels"]
    assert fast["quantizer"]["inner"]["N"] < base["quantizer"]["inner"]["N"]
    assert fast["quantizer"]["lambdas"] == base["quantizer"]["lambdas"] and fast.train == base.train


@pytest.mark.parametrize("rate", [0, 6])
def test_fast_decode_files_round_trip_and_decode_with_under_a_third_of_the_macs(tmp_path, rate):
    fast, base = _codec("fast-decode", tmp_path), _codec("fast-vr", tmp_path)
    fast.set_rate(rate=rate)
    base.set_rate(rate=rate)
    data = fast.compress(IMAGE)
    decoded = fast.decompress(data)
    assert decoded.shape == IMAGE.shape and np.array_equal(decoded, fast.reconstruct(IMAGE))
    ratio = _decode_macs(fast, data) / _decode_macs(base, base.compress(IMAGE))
    assert 0.1 < ratio < 1 / 3, ratio
