"""rd-perceptual: per-image VGG values, lambda weighting, gradients, precision, every, errors; with fast-vr."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from plugin_helpers import save_vgg_weights

from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.plugins import vgg
from rdkit_ae.registry import create


@pytest.fixture(autouse=True)
def _isolated_vgg(monkeypatch, tmp_path):
    """No VGG settings from the environment, no cached networks, no network access."""
    monkeypatch.delenv(vgg.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv(vgg.ENV_PREPROCESSING, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    vgg.clear_cache()
    yield
    vgg.clear_cache()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random VGG-16 weights up to relu3_3 (features[:16])."""
    return save_vgg_weights(tmp_path_factory.mktemp("vgg") / "vgg16-random.pth", depth=15)


def smooth(B=4, H=32, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(B, 3, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear")


def batch(B=4, seed=0):
    """Originals, reconstructions, likelihoods and per-image lambdas of a fake variable-rate output."""
    g = torch.Generator().manual_seed(seed + 1)
    x = smooth(B, seed=seed)
    x_hat = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    likelihoods = {"y": torch.rand(B, 8, 4, 4, generator=g).clamp_min(0.01), "z": [torch.full((B, 4, 2, 2), 0.5)]}
    lmbda = torch.tensor([0.0016, 0.0128, 0.1024, 0.0064])[:B]
    return x, {"x_hat": x_hat, "likelihoods": likelihoods, "lmbda": lmbda}


def loss(vgg_file, **params):
    return create("loss", "rd-perceptual", weights=str(vgg_file), **params)


def bpp_of(out, B, H=32, W=32):
    bits = sum(torch.log(t).reshape(B, -1).sum(1) for t in [out["likelihoods"]["y"], *out["likelihoods"]["z"]])
    return bits / (-math.log(2) * H * W)


def test_per_image_values_average_to_vgg_perceptual(vgg_file):
    x, out = batch()
    rdp = loss(vgg_file)
    per_image = rdp.perceptual(x, out["x_hat"])
    assert per_image.shape == (4,) and (per_image > 0).all()
    whole = create("loss", "vgg-perceptual", weights=str(vgg_file))(x, out)
    assert per_image.mean().item() == pytest.approx(whole.item(), rel=1e-5)
    # an exact copy of one image gives 0 for that image only
    x_hat = out["x_hat"].clone()
    x_hat[2] = x[2]
    values = rdp.perceptual(x, x_hat)
    assert values[2].item() == 0 and torch.allclose(values[[0, 1, 3]], per_image[[0, 1, 3]])


def test_loss_is_lambda_weighted_distortion_plus_rate(vgg_file):
    x, out = batch()
    w = 0.02
    rdp = loss(vgg_file, perceptual_weight=w)
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    expected = (out["lmbda"] * 255**2 * (mse + w * rdp.perceptual(x, out["x_hat"])) + bpp_of(out, 4)).mean()
    assert rdp(x, out).item() == pytest.approx(expected.item(), rel=1e-6)
    # w = 0 is the rd loss, without the network
    assert loss(vgg_file, perceptual_weight=0)(x, out).item() == pytest.approx(create("loss", "rd")(x, out).item())


def test_gradient_scales_with_each_images_lambda_and_misses_vgg(vgg_file):
    x, out = batch()
    rdp = loss(vgg_file, perceptual_weight=0.1)

    def grad(lmbda):
        x_hat = out["x_hat"].clone().requires_grad_(True)
        rdp(x, {**out, "x_hat": x_hat, "lmbda": lmbda}).backward()
        return x_hat.grad

    base = grad(out["lmbda"])
    doubled = out["lmbda"].clone()
    doubled[1] *= 2
    g = grad(doubled)
    assert base.abs().sum() > 0
    assert torch.allclose(g[1], 2 * base[1], rtol=1e-4, atol=1e-12)
    assert torch.allclose(g[[0, 2, 3]], base[[0, 2, 3]])
    net = vgg.load_features(15, str(vgg_file))
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


def test_fixed_lambda_for_models_without_one(vgg_file):
    x, out = batch()
    fixed = {k: v for k, v in out.items() if k != "lmbda"}
    with pytest.raises(RdkitError, match="no per-image lambda"):
        loss(vgg_file)(x, fixed)
    same = {**out, "lmbda": torch.full((4,), 0.01)}
    assert loss(vgg_file, lmbda=0.01)(x, fixed).item() == pytest.approx(loss(vgg_file)(x, same).item())


def test_every_k_training_steps_and_always_in_validation(vgg_file):
    x, out = batch()
    rd = create("loss", "rd")(x, out).item()
    full = loss(vgg_file)(x, out).item()
    assert full > rd
    tripled = loss(vgg_file, perceptual_weight=0.3)(x, out).item()
    every = loss(vgg_file, every=3).train()
    assert [every(x, out).item() for _ in range(4)] == pytest.approx([tripled, rd, rd, tripled])
    every.eval()
    assert every(x, out).item() == pytest.approx(full)


def test_bf16_is_close_to_fp32(vgg_file):
    x, out = batch()
    fp32 = loss(vgg_file).perceptual(x, out["x_hat"])
    bf16 = loss(vgg_file, precision="bf16").perceptual(x, out["x_hat"])
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16, fp32, rtol=0.1)
    assert loss(vgg_file, precision="auto").precision == "auto"


def test_no_likelihoods_is_one_line(vgg_file):
    x, out = batch()
    with pytest.raises(RdkitError, match="no likelihoods"):
        loss(vgg_file)(x, {"x_hat": out["x_hat"], "lmbda": out["lmbda"]})


@pytest.mark.parametrize(
    "params, message",
    [
        ({"perceptual_weight": -1}, "perceptual_weight must be a non-negative number"),
        ({"perceptual_weight": "0.1"}, "perceptual_weight must be"),
        ({"lmbda": 0}, "lmbda must be a positive number"),
        ({"precision": "fp16"}, "precision"),
        ({"every": 0}, "every"),
        ({"layers": ["relu9_9"]}, "unknown VGG-16 layer"),
        ({"layers": ["relu1_2", "relu1_2"]}, "lists a layer twice"),
        ({"layer_weights": [1.0]}, "1 values for 3 layers"),
        ({"normalize": "batch"}, "normalize"),
    ],
)
def test_bad_parameters_are_one_line_errors(vgg_file, params, message):
    with pytest.raises(PluginError, match=message):
        loss(vgg_file, **params)


def test_missing_weights_fail_when_built(tmp_path):
    with pytest.raises(RdkitError, match="not found"):
        create("loss", "rd-perceptual", weights=str(tmp_path / "none.pth"))


def test_fast_vr_recipe_with_it_trains_a_step(vgg_file, monkeypatch, tmp_path):
    """fast-vr with its rd loss replaced, as benchmarks/fast-vr-hybrid.toml does."""
    from rdkit_ae.model import build_model, build_objective
    from rdkit_ae.recipe import load_recipe

    monkeypatch.setenv(vgg.ENV_WEIGHTS, str(vgg_file))
    path = tmp_path / "hybrid.toml"
    path.write_text(
        'extends = "fast-vr"\nreplace_losses = true\n[[loss]]\nname = "rd-perceptual"\nperceptual_weight = 0.01\n'
    )
    recipe = load_recipe(str(path), overrides=["encoder.latent_channels=8", "encoder.channels=8"])
    assert [e["name"] for e in recipe.losses] == ["rd-perceptual"]
    model, objective = build_model(recipe).train(), build_objective(recipe).train()
    x = smooth(2)
    total, terms = objective(x, model(x))
    total.backward()
    assert torch.isfinite(total) and list(terms) == ["rd-perceptual"]
    assert all(p.grad is not None for p in model.g_a.parameters() if p.requires_grad)
