"""The .rdk bytes and decoded pixels of seeded models, pinned: speed work on the codec must not change a bit.

The digests were computed by the code before the speed-ups of issue #19
(commit 5f5a158) on random-weight models of each entropy-model family (gain
units over the mean-scale hyperprior, the checkerboard context, the scale
hyperprior, the factorized prior). The files are portable (version 3/4), so
the same digests hold on every CPU.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from test_codec_support import smooth_image

from rdkit_ae.codec import Codec
from rdkit_ae.model import build_model

# (recipe, overrides, rate, image height, width)
CASES = {
    "fast-vr": ("fast-vr", ["encoder.channels=16", "quantizer.inner.N=16"], 2.5, 64, 96),
    "fast-vr-checkerboard": ("fast-vr-checkerboard", ["encoder.channels=16", "quantizer.inner.N=16"], 4.0, 64, 96),
    "hyperprior": ("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"], None, 64, 64),
    "factorized": ("factorized", ["encoder.N=8", "encoder.M=12"], None, 48, 80),
}

PINNED = {
    "fast-vr": (
        "994707637e84016fdf7965b7136f9118a79c49fb75cb398ef12e29f4736f188a",
        "e44ff04053bf486935839e1c5717da21dfa3f318d1eab41a8095cf19b88039f0",
    ),
    "fast-vr-checkerboard": (
        "8b8f3adf6a0656a38609cdfe0799a9db9c1341ba6d9092b7cc4452dd317fde30",
        "0bcaa20ed03842d64c573523d8e87256bd6b17835606d92368cf78ef3d162184",
    ),
    "hyperprior": (
        "9493ce0cf84d9ae7a3461f99e71df80eced1dfe627307de9f5ade89fe06a43a6",
        "98d03dd0f973a743bc55bff844f3b75de2d167130c5614780531bda4b0cd5700",
    ),
    "factorized": (
        "285f2434f512735287ff1133256dde57d177df69ede2a16ee116f252a748c278",
        "144de07ce4c21f44d37d55c09fd4bf23bec5cf352d5c0c7b2684267e6360d2d2",
    ),
}


def digests(name: str) -> tuple[str, str]:
    """(sha256 of the .rdk bytes, sha256 of the decoded pixels) of a seeded model on a smooth image."""
    recipe, overrides, rate, height, width = CASES[name]
    torch.manual_seed(0)
    model = build_model(recipe, list(overrides))
    model.eval()
    model.update(force=True)
    codec = Codec.from_model(model)
    if rate is not None:
        codec.set_rate(rate=rate)
    data = codec.compress(smooth_image(height, width, seed=3))
    pixels = codec.decompress(data)
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(pixels.tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bytes_and_pixels_are_pinned(name):
    assert digests(name) == PINNED[name]


def test_scale_lookup_gives_bucketize_rows():
    """The lookup table of CDF rows for integer grid scales agrees with the bucketize it replaces, at the edges too."""
    from compressai.entropy_models import GaussianConditional
    from compressai.models.google import get_scale_table

    from rdkit_ae.plugin import gaussian as G

    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    scales = torch.randint(-500, 80_000, (20_000,)).double()
    scales[:6] = torch.tensor([float("inf"), float("-inf"), 0.0, -1.0, 1e30, 28.0])
    table = gc.scale_table.double()
    bound = float(gc.lower_bound_scale.bound)
    expected = torch.bucketize(torch.clamp(scales / G.GRID, min=bound), table[:-1].contiguous()).int()
    assert G._lookup(gc, table, bound) is not None
    assert torch.equal(G.scale_indexes(gc, scales), expected)
    halves = scales + 0.5  # not on the grid: bucketize
    assert torch.equal(
        G.scale_indexes(gc, halves), torch.bucketize(torch.clamp(halves / G.GRID, min=bound), table[:-1]).int()
    )
