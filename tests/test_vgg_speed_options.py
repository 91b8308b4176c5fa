"""vgg-perceptual's speed options: precision (fp32 / bf16 / auto), every (every k-th step), batch_fraction."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from plugin_helpers import save_vgg_weights
from synthetic import smooth_images

from rdkit_ae.errors import PluginError
from rdkit_ae.plugins import vgg
from rdkit_ae.registry import create


@pytest.fixture(autouse=True)
def _isolated_vgg(monkeypatch):
    """No VGG settings from the environment, no cached networks, no network access."""
    monkeypatch.delenv(vgg.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv(vgg.ENV_PREPROCESSING, raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    vgg.clear_cache()
    yield
    vgg.clear_cache()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random VGG-16 weights up to relu3_3 in torchvision's layout."""
    return save_vgg_weights(tmp_path_factory.mktemp("vgg") / "vgg16-random.pth", depth=15)


def vgg_loss(weights, **params):
    return create("loss", "vgg-perceptual", weights=str(weights), preprocessing="caffe", **params)


def batch(n=8, noise=0.1, seed=1):
    """Smooth photo-like images and a noisy reconstruction of them."""
    x = torch.from_numpy(smooth_images(n, seed=seed)).permute(0, 3, 1, 2).float() / 255.0
    g = torch.Generator().manual_seed(seed)
    return x, (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def value_and_grad(loss, x, x_hat):
    x_hat = x_hat.clone().requires_grad_(True)
    value = loss(x, {"x_hat": x_hat})
    value.backward()
    return value, x_hat.grad


def test_bf16_close_to_fp32(vgg_file):
    """bf16 autocast of the VGG passes: value within 1% of fp32 (measured 0.01-0.4%), gradient cosine > 0.99."""
    x, x_hat = batch()
    ref, g_ref = value_and_grad(vgg_loss(vgg_file), x, x_hat)
    fast, g_fast = value_and_grad(vgg_loss(vgg_file, precision="bf16"), x, x_hat)
    assert ref.dtype == fast.dtype == torch.float32  # summed in fp32
    assert fast.item() == pytest.approx(ref.item(), rel=1e-2)
    assert torch.isfinite(g_fast).all()
    cosine = torch.nn.functional.cosine_similarity(g_fast.flatten(), g_ref.flatten(), dim=0).item()
    assert cosine > 0.99  # measured 0.997 on this batch
    assert not torch.equal(g_fast, g_ref)  # bf16 really ran


def test_fp32_is_the_default_and_exact(vgg_file):
    x, x_hat = batch(n=2)
    default, explicit = vgg_loss(vgg_file), vgg_loss(vgg_file, precision="fp32", every=1)
    assert default.precision == "fp32" and default.every == 1
    assert default(x, {"x_hat": x_hat}).item() == explicit(x, {"x_hat": x_hat}).item()


def test_auto_follows_the_hardware(vgg_file, monkeypatch):
    cpu = torch.device("cpu")
    expected = "bf16" if vgg.native_bf16(cpu) else "fp32"
    assert vgg.resolve_precision("auto", cpu) == expected
    assert vgg.resolve_precision("fp32", cpu) == "fp32" and vgg.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # a oneDNN capped below bf16 has none
    assert vgg.resolve_precision("auto", cpu) == "fp32"
    x, x_hat = batch(n=2)
    assert vgg_loss(vgg_file, precision="auto")(x, {"x_hat": x_hat}).item() > 0


def test_every_k_training_calls(vgg_file):
    """Training mode: k x the term on calls 1, k+1, 2k+1, ...; exactly 0 in between, still differentiable."""
    x, x_hat = batch(n=2)
    ref = vgg_loss(vgg_file)(x, {"x_hat": x_hat}).item()
    loss = vgg_loss(vgg_file, every=3).train()
    values = []
    for _ in range(7):
        v, grad = value_and_grad(loss, x, x_hat)
        values.append(v.item())
        assert grad is not None and (grad.abs().sum() > 0) == (v.item() != 0)
    assert values[0] == pytest.approx(3 * ref, rel=1e-6)
    assert values[3] == pytest.approx(3 * ref, rel=1e-6) and values[6] == pytest.approx(3 * ref, rel=1e-6)
    assert [values[i] for i in (1, 2, 4, 5)] == [0.0] * 4
    assert sum(values[:6]) / 6 == pytest.approx(ref, rel=1e-6)  # the expected weight is unchanged


def test_every_always_computed_in_eval(vgg_file):
    x, x_hat = batch(n=2)
    ref = vgg_loss(vgg_file)(x, {"x_hat": x_hat}).item()
    loss = vgg_loss(vgg_file, every=4).eval()
    with torch.no_grad():
        assert [loss(x, {"x_hat": x_hat}).item() for _ in range(3)] == pytest.approx([ref] * 3, rel=1e-6)
    loss.train()  # eval calls did not move the training phase: the next training call is active
    assert loss(x, {"x_hat": x_hat}).item() == pytest.approx(4 * ref, rel=1e-6)


def test_batch_fraction_uses_the_first_images_in_training(vgg_file):
    x, x_hat = batch(n=4)
    full = vgg_loss(vgg_file)
    first_half = full(x[:2], {"x_hat": x_hat[:2]}).item()
    loss = vgg_loss(vgg_file, batch_fraction=0.5).train()
    value, grad = value_and_grad(loss, x, x_hat)
    assert value.item() == pytest.approx(first_half, rel=1e-6)
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() == 0
    assert vgg_loss(vgg_file, batch_fraction=0.3).train()(x, {"x_hat": x_hat}).item() == pytest.approx(
        first_half, rel=1e-6
    )  # ceil(0.3 * 4) = 2 images
    with torch.no_grad():  # eval mode: the whole batch
        assert loss.eval()(x, {"x_hat": x_hat}).item() == pytest.approx(full(x, {"x_hat": x_hat}).item(), rel=1e-6)


@pytest.mark.parametrize(
    "params,message",
    [
        ({"precision": "fp16"}, "precision must be one of 'fp32', 'bf16', 'auto'; got 'fp16'"),
        ({"precision": 16}, "precision must be one of"),
        ({"every": 0}, "every must be >= 1; got 0"),
        ({"every": 2.5}, "every must be an integer; got 2.5"),
        ({"every": "4"}, "every must be an integer"),
        ({"batch_fraction": 0}, "batch_fraction must be a number in (0, 1]; got 0"),
        ({"batch_fraction": 1.5}, "batch_fraction must be a number in (0, 1]; got 1.5"),
        ({"batch_fraction": "half"}, "batch_fraction must be a number in (0, 1]; got 'half'"),
    ],
)
def test_bad_values_are_one_line_errors(vgg_file, params, message):
    with pytest.raises(PluginError) as err:
        vgg_loss(vgg_file, **params)
    assert message in str(err.value) and "vgg-perceptual" in str(err.value) and "\n" not in str(err.value)
