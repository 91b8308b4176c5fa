"""Variable rate (quantizer gain), rd loss: interpolation, per-image lambdas, operating points, .rdk, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from train_helpers import FAST, make_npz

from rdkit_ae.codec import Codec
from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.model import build_model, build_objective
from rdkit_ae.plugins.variable_rate import RateError
from rdkit_ae.recipe import Recipe
from rdkit_ae.registry import create
from rdkit_ae.training import train

LAMBDAS = [0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512]
RECIPE = """
[encoder]
name = "gdn"
N = {N}
M = {M}
stages = 2

[quantizer]
name = "gain"
lambdas = {lambdas}
inner = {inner}

[[loss]]
name = "rd"

[train]
batch_size = 8
crop_size = 16
optimizer = {{ name = "adam", lr = 2e-3 }}
aux_lr = 1e-2
"""
MEAN_SCALE = '{ name = "mean-scale-hyperprior", N = 8, hyper_stages = 1, mixed = true }'


def recipe(inner: str = MEAN_SCALE, N: int = 16, M: int = 24, lambdas=LAMBDAS) -> Recipe:
    return Recipe.from_toml(RECIPE.format(N=N, M=M, lambdas=lambdas, inner=inner))


def tiny_model(inner: str = MEAN_SCALE, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(recipe(inner))
    with torch.no_grad():  # random init gives latents near 0: widen them so many symbols are coded
        model.g_a.net[-1].weight.mul_(10.0)
    return model


def images(n: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(smooth_images(n, h, w, seed)).permute(0, 3, 1, 2).float() / 255


def test_parameters_are_checked_in_one_line():
    for lambdas, match in [([0.01], "2..64"), ([0.02, 0.01], "increase"), ([0.01, -1], "positive"), ("x", "list")]:
        with pytest.raises(PluginError, match=match):
            create("quantizer", "gain", channels=8, lambdas=lambdas, inner={"name": "hyperprior"})
    for inner, match in [
        ({}, "inner must be a table"),
        ({"name": "nope"}, "unknown quantizer 'nope'"),
        ({"name": "hyperprior", "M": 3}, "inner quantizer 'hyperprior' has no parameter 'M'"),
        ({"name": "gain", "lambdas": [1, 2]}, "another 'gain'"),
    ]:
        with pytest.raises(PluginError, match=match):
            create("quantizer", "gain", channels=8, lambdas=[0.01, 0.1], inner=inner)
    with pytest.raises(PluginError, match="quantizer 'gain': inner quantizer 'hyperprior': N must be >= 1"):
        build_model(recipe(inner='{ name = "hyperprior", N = 0 }'))


def test_gains_start_at_high_rate_theory_and_interpolate_log_linearly():
    q = create("quantizer", "gain", channels=4, lambdas=LAMBDAS, inner={"name": "factorized-entropy"})
    gain, inverse, lmbda = q.gains(torch.tensor([0.0, 2.0, 2.5, 5.0]))
    expected = torch.tensor([math.sqrt(v / 4e-4) for v in (LAMBDAS[0], LAMBDAS[2], 0, LAMBDAS[5])])
    assert torch.allclose(gain[[0, 1, 3], :, 0, 0], expected[[0, 1, 3], None].expand(3, 4), rtol=1e-5)
    assert torch.allclose(gain * inverse, torch.ones_like(gain))
    assert torch.allclose(gain[2], (gain[1] * q.gains(torch.tensor([3.0]))[0][0]).sqrt())
    assert torch.allclose(lmbda, torch.tensor([0.0016, 0.0064, math.sqrt(0.0064 * 0.0128), 0.0512]))


def test_training_draws_one_rate_per_image_from_the_global_generator():
    model = tiny_model().train()
    x = images(8)
    torch.manual_seed(5)
    a = model(x)
    torch.manual_seed(5)
    b = model(x)
    assert a["lmbda"].shape == (8,) and torch.equal(a["lmbda"], b["lmbda"]) and torch.equal(a["x_hat"], b["x_hat"])
    assert len(set(a["lmbda"].tolist())) == 8
    assert all(LAMBDAS[0] <= v <= LAMBDAS[-1] for v in a["lmbda"].tolist())
    loss, _ = build_objective(model.recipe)(x, a)
    loss.backward()
    q = model.latent_codec
    assert q.log_gain.grad.abs().sum() > 0 and q.log_inverse_gain.grad.abs().sum() > 0
    assert model.g_a.net[0].weight.grad is not None


def test_operating_point_by_lambda_or_index():
    model = tiny_model().eval()
    q = model.latent_codec
    assert model.variable_rate and q.rate == 2.5  # the middle of the trained range
    assert model.set_rate(lmbda=0.0128) == 3.0 and q.lmbda == pytest.approx(0.0128)
    assert model.set_rate(lmbda=math.sqrt(0.0016 * 0.0032)) == pytest.approx(0.5)
    assert model.set_rate(index=5) == 5.0 and q.lmbda == pytest.approx(0.0512)
    out = model(images(3))
    assert torch.allclose(out["lmbda"], torch.full((3,), 0.0512))
    with pytest.raises(RateError, match="outside the trained range"):
        model.set_rate(lmbda=0.1)
    with pytest.raises(RateError, match="outside 0..5"):
        model.set_rate(index=6)
    with pytest.raises(RateError, match="either"):
        model.set_rate(lmbda=0.01, index=1)
    fixed = build_model("factorized", ["encoder.N=8", "encoder.M=8"])
    assert not fixed.variable_rate
    with pytest.raises(RdkitError, match="single rate"):
        fixed.set_rate(index=0)


INNERS = [MEAN_SCALE, '{ name = "checkerboard", N = 8, hyper_stages = 1 }', '{ name = "factorized-entropy" }']


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize("size", [(32, 32), (64, 96)])
def test_rdk_round_trips_at_every_rate(inner, size):
    model = tiny_model(inner)
    model.eval().update(force=True)
    codec = Codec.from_model(model)
    image = smooth_images(1, *size, seed=1)[0]
    sizes = []
    for t in (0, 1.5, 5):
        model.set_rate(index=t)
        data = codec.compress(image)
        assert np.array_equal(codec.decompress(data), codec.reconstruct(image))
        sizes.append(len(data))
    assert sizes[0] < sizes[1] < sizes[2]
    assert model.latent_codec.bitstream_layout == model.latent_codec.inner.bitstream_layout


def test_rd_loss_per_image_and_fixed_lambda():
    x = images(2)
    x_hat = (x + 0.05 * torch.arange(2.0).view(2, 1, 1, 1)).requires_grad_(True)
    lik = torch.full((2, 4, 2, 2), 0.5)
    out = {"x_hat": x_hat, "likelihoods": {"y": lik}, "lmbda": torch.tensor([0.01, 0.1])}
    loss = create("loss", "rd")(x, out)
    mse = ((x_hat - x) ** 2).mean((1, 2, 3))
    bpp = 16 / (32 * 32)
    assert loss.item() == pytest.approx(((torch.tensor([0.01, 0.1]) * 255**2 * mse).mean() + bpp).item(), rel=1e-6)
    loss.backward()
    assert x_hat.grad[1].abs().sum() > 0
    del out["lmbda"]
    with pytest.raises(RdkitError, match="no per-image lambda"):
        create("loss", "rd")(x, out)
    fixed = create("loss", "rd", lmbda=0.1)(x, out)
    assert fixed.item() == pytest.approx((0.1 * 255**2 * mse).mean().item() + bpp, rel=1e-6)
    with pytest.raises(PluginError, match="positive"):
        create("loss", "rd", lmbda=0)


def test_trained_model_rate_follows_lambda(tmp_path):
    npz = make_npz(tmp_path / "images.npz", n=64, size=16)
    path = tmp_path / "vr.toml"
    path.write_text(recipe(N=8, M=12).to_toml())
    res = train(str(path), npz, tmp_path / "run", epochs=40, max_steps=200, evaluate=False, **FAST)
    assert res.stopped == "max_steps"
    codec = Codec.load(res.last_checkpoint)
    test = smooth_images(6, 32, 32, seed=9)
    total = []
    for index in range(len(LAMBDAS)):
        codec.model.set_rate(index=index)
        data = [codec.compress(im) for im in test]
        assert all(np.array_equal(codec.decompress(d), codec.reconstruct(im)) for d, im in zip(data, test))
        total.append(sum(len(d) for d in data))
    assert all(a < b for a, b in zip(total, total[1:])), total  # fewer bytes as lambda decreases


@pytest.mark.parametrize("name", ["fast-vr", "fast-vr-checkerboard", "vr-large"])
def test_zoo_recipes_build_and_round_trip_at_two_rates(name):
    torch.manual_seed(0)
    model = build_model(name)
    assert model.variable_rate and model.recipe.description
    assert [e["name"] for e in model.recipe.losses] == ["rd"]
    model.eval().update(force=True)
    codec = Codec.from_model(model)
    image = smooth_images(1, 64, 96, seed=2)[0]
    sizes = []
    for index in (0, len(model.latent_codec.lambdas) - 1):
        model.set_rate(index=index)
        data = codec.compress(image)
        assert np.array_equal(codec.decompress(data), codec.reconstruct(image))
        sizes.append(len(data))
    assert sizes[0] < sizes[1]
