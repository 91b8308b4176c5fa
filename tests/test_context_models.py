"""Quantizer checkerboard (He et al. 2021): shapes, gradients, bit-exact .rdk round trips at any size, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import smooth_images

from rdkit_ae.codec import Codec
from rdkit_ae.codec.layout import latent_layout, plain_shape
from rdkit_ae.errors import FormatError, PluginError
from rdkit_ae.model import build_model
from rdkit_ae.recipe import Recipe
from rdkit_ae.registry import create, list_plugins

RECIPE = """
[encoder]
name = "gdn"
N = 16
M = 24
stages = 2

[quantizer]
name = "checkerboard"
N = 16
hyper_stages = 2

[[loss]]
name = "mse"
"""


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(Recipe.from_toml(RECIPE))
    with torch.no_grad():  # random init gives latents near 0: widen them so many symbols are coded
        model.g_a.net[-1].weight.mul_(30.0)
    return model


def test_registered_with_summary_and_checks():
    info = {p.name: p for p in list_plugins("quantizer")}["checkerboard"]
    assert "checkerboard" in info.summary.lower()
    with pytest.raises(PluginError, match="hyper_stages"):
        create("quantizer", "checkerboard", channels=8, hyper_stages=0)
    with pytest.raises(PluginError, match="mixed"):
        create("quantizer", "checkerboard", channels=8, mixed=1)


@pytest.mark.parametrize("train", [True, False])
def test_forward_shapes_and_likelihoods(train):
    torch.manual_seed(0)
    q = create("quantizer", "checkerboard", channels=12, N=8, hyper_stages=2).train(train)
    y = torch.randn(3, 12, 8, 12) * 3
    out = q(y)
    assert out["y_hat"].shape == y.shape
    assert out["likelihoods"]["y"].shape == y.shape
    assert out["likelihoods"]["z"].shape == (3, 8, 2, 3)
    assert all(((t > 0) & (t <= 1)).all() for t in out["likelihoods"].values())
    assert q.stride == 4


def test_gradients_reach_every_part():
    model = tiny_model().train()
    x = torch.from_numpy(smooth_images(2, 32, 32)).permute(0, 3, 1, 2).float() / 255
    out = model(x)
    bits = sum(-torch.log2(t).sum() for t in out["likelihoods"].values())
    (torch.nn.functional.mse_loss(out["x_hat"], x) + 1e-3 * bits).backward()
    missing = [n for n, p in model.named_parameters() if not n.endswith("quantiles") and p.grad is None]
    assert missing == []
    # The context network is trained: the non-anchors' parameters depend on the anchors.
    assert model.latent_codec.y.context_prediction.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (45, 71)])
def test_rdk_round_trip_is_bit_exact(size):
    model = tiny_model()
    model.eval().update(force=True)
    codec = Codec.from_model(model)
    image = smooth_images(1, *size, seed=sum(size))[0]
    data = codec.compress(image)
    decoded = codec.decompress(data)
    assert decoded.shape == image.shape
    assert np.array_equal(decoded, codec.reconstruct(image))
    # The layout the container derives equals what compress writes.
    layout = latent_layout(model, *size)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    out = model.compress(x)
    assert layout.shape == plain_shape(out["shape"]) and layout.streams == len(out["strings"]) == 3


def test_batched_compress_matches_eval_forward():
    model = tiny_model()
    model.eval().update(force=True)
    x = torch.from_numpy(smooth_images(3, 32, 48)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model(x)["x_hat"].clamp(0, 1)
    coded = model.compress(x)
    assert all(len(s) == 3 for s in coded["strings"])
    decoded = model.decompress(coded["strings"], coded["shape"], coded["size"])["x_hat"]
    assert torch.equal(decoded, expected)


def test_bad_strings_and_shapes_are_refused():
    q = create("quantizer", "checkerboard", channels=8, N=8, hyper_stages=1)
    q.eval().update(force=True)
    coded = q.compress(torch.randn(1, 8, 4, 6) * 3)
    assert coded["shape"] == {"y": (8, 4, 6), "hyper": (2, 3)}
    assert q.bitstream_layout(4, 6) == (coded["shape"], 3)
    y_hat = q.decompress(coded["strings"], coded["shape"])["y_hat"]
    assert torch.equal(y_hat, coded["y_hat"])
    with pytest.raises(FormatError, match="3 stream"):
        q.decompress(coded["strings"][:2], coded["shape"])
    with pytest.raises(FormatError, match="latent"):
        q.decompress(coded["strings"], {"y": (8, 4, 8), "hyper": (2, 3)})
    with pytest.raises(FormatError, match="shape must be"):
        q.decompress(coded["strings"], {"y": (4, 6)})
    with pytest.raises(FormatError, match="even"):
        q.compress(torch.randn(1, 8, 4, 5))
