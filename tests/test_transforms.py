"""Block transforms (encoder/decoder "block"), the linear shortcut of conv/gdn and the data-dependent (PCA) init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import FAST, assert_same_weights, make_npz, model_state

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.codec import Codec
from rdkit_ae.data.datasets import ImageDataset
from rdkit_ae.data.sources import load_images
from rdkit_ae.errors import RdkitError
from rdkit_ae.model import build_model
from rdkit_ae.plugin.exact import is_integer_network_key
from rdkit_ae.plugins.linear_paths import block_pca, haar_basis
from rdkit_ae.recipe import Recipe, load_recipe
from rdkit_ae.training import Callback, train
from rdkit_ae.training.datainit import init_from_data

V01 = Path(__file__).parent / "data" / "v0.1"
BLOCK = ['encoder={name="block"}', 'decoder={name="block"}']


def block_model(*extra: str, quantizer: str = "factorized-entropy"):
    return build_model(load_recipe("factorized", [*BLOCK, f'quantizer={{name="{quantizer}"}}', *extra]))


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Gradients plus noise in [0, 1]: correlated pixels, so a PCA has a clear order."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    a, b = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    return (0.2 + 0.4 * a * yy + 0.4 * b * xx + 0.05 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (35, 29), (17, 50)])
def test_block_model_shapes_through_padding(size):
    model = block_model()
    h, w = size
    out = model(torch.rand(2, 3, h, w))
    assert out["x_hat"].shape == (2, 3, h, w)
    assert model.latent_shape(h, w) == (48, -(-h // 4), -(-w // 4))
    assert out["likelihoods"]["y"].shape == (2, 48, -(-h // 4), -(-w // 4))


def test_block_attributes_and_options():
    enc = block_model("encoder.latent_channels=24", "encoder.factor=8", "encoder.channels=16").g_a
    dec = block_model("encoder.latent_channels=24", "encoder.factor=8", "encoder.channels=16").g_s
    assert (enc.stride, enc.out_channels, dec.stride, dec.in_channels) == (8, 24, 8, 24)
    linear_only = block_model("encoder.nonlinear=false")
    assert linear_only.g_a.residual is None and linear_only.g_s.residual is None
    assert not any(".residual." in k for k in linear_only.state_dict())
    nonlinear_only = block_model("encoder.linear=false")
    assert nonlinear_only.g_a.linear is None
    last = nonlinear_only.g_a.residual[-1].weight
    assert last.abs().sum() > 0  # without a linear path the residual cannot start at zero


def test_gradients_reach_every_parameter():
    model = block_model()
    x = torch.rand(4, 3, 32, 32)
    out = model(x)
    loss = F.mse_loss(out["x_hat"], x) + sum(torch.log(v).sum() for v in out["likelihoods"].values()) * -1e-4
    loss.backward()
    for name, p in model.named_parameters():
        if name.endswith("quantiles"):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the zero-initialised last residual layers learn from the first step; the linear paths too
    for key in ("g_a.residual.4.weight", "g_s.residual.4.weight", "g_a.linear.proj.weight", "g_s.linear.proj.weight"):
        assert model.get_parameter(key).grad.abs().sum() > 0, key


def test_residual_starts_at_zero_so_the_model_is_its_linear_coder():
    model = block_model()
    model.eval()
    x = smooth_images(3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.g_a.residual(F.pixel_unshuffle(x, 4)), torch.zeros(3, 48, 8, 8))
        assert torch.allclose(model.g_s(model.g_a(x)), x, atol=1e-5)  # Haar start, 48 of 48 components


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_haar_basis_is_orthonormal(factor):
    basis = haar_basis(factor)
    d = 3 * factor * factor
    assert basis.shape == (d, d)
    assert torch.allclose(basis @ basis.T, torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(basis[0], torch.full((d,), d**-0.5, dtype=torch.float64))  # the block's mean first


def test_pca_init_is_orthonormal_and_reconstructs_blocks_exactly():
    model = block_model("encoder.nonlinear=false")
    x = smooth_images(64, 32, 32)
    assert init_from_data(model, x) == 2  # the encoder's and the decoder's linear paths
    w_a = model.g_a.linear.proj.weight[:, :, 0, 0].double()
    w_s = model.g_s.linear.proj.weight[:, :, 0, 0].double()
    assert torch.allclose(w_a @ w_a.T, torch.eye(48, dtype=torch.float64), atol=1e-5)
    assert torch.equal(w_s, w_a.T)
    mean, comps = block_pca(x, 4)
    assert torch.allclose(w_a, comps.float().double(), atol=1e-6)
    assert torch.allclose(model.g_s.linear.proj.bias.double(), mean, atol=1e-6)
    with torch.no_grad():
        y = model.g_a(x)
        assert torch.allclose(model.g_s(y), x, atol=1e-5)
        # components by decreasing variance, decorrelated on the data they came from
        flat = y.permute(0, 2, 3, 1).reshape(-1, 48).double()
        var = flat.var(0)
        assert (var[:-1] >= var[1:] - 1e-9).all() and var[0] > 10 * var[-1]
        cov = torch.cov(flat.T)
        assert (cov - torch.diag(cov.diag())).abs().max() < 1e-4 * var[0]
        assert flat.mean(0).abs().max() < 1e-4


def test_pca_keeps_the_top_components_when_the_latent_is_smaller():
    model = block_model("encoder.nonlinear=false", "encoder.latent_channels=12")
    x = smooth_images(64, 32, 32)
    init_from_data(model, x)
    blocks = F.pixel_unshuffle(x, 4).permute(0, 2, 3, 1).reshape(-1, 48)
    with torch.no_grad():
        err = (model.g_s(model.g_a(x)) - x).pow(2).mean()
        # the same number of Haar components keeps less of the signal than the PCA's
        haar = block_model("encoder.nonlinear=false", "encoder.latent_channels=12", "encoder.init=haar")
        err_haar = (haar.g_s(haar.g_a(x)) - x).pow(2).mean()
    assert err < err_haar and err < 0.5 * blocks.var(0).sum() / 48


def test_block_codes_bit_exactly_through_the_codec():
    for quantizer, extra in [("factorized-entropy", ["encoder.gain=16"]), ("mean-scale-hyperprior", [])]:
        torch.manual_seed(0)
        model = block_model(*extra, quantizer=quantizer)
        init_from_data(model, smooth_images(32, 32, 32))
        model.update(force=True)
        codec = Codec.from_model(model)
        for h, w in [(32, 32), (37, 45)]:
            image = (smooth_images(1, h, w, seed=h)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            data = codec.compress(image)
            decoded = codec.decompress(data)
            assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
            assert np.array_equal(decoded, codec.reconstruct(image)), quantizer
            assert np.array_equal(codec.decompress(codec.compress(image)), decoded)
            assert len(data) > 20


@pytest.mark.parametrize("name", ["conv-mse", "factorized", "hyperprior"])
def test_shortcut_off_keeps_the_state_dict_keys_of_released_checkpoints(name):
    payload = load_checkpoint(V01 / f"{name}.pt")
    old, recipe = payload["model"], Recipe.from_toml(payload["recipe"])
    # Beside them, only the portable path's integer networks (derived from the weights, filled by update()).
    keys = {k for k in build_model(recipe).state_dict() if not is_integer_network_key(k)}
    assert keys == set(old)
    new = {k for k in build_model(recipe, ["encoder.shortcut=linear"]).state_dict() if not is_integer_network_key(k)}
    added = {"g_a.shortcut.proj.weight", "g_a.shortcut.proj.bias", "g_s.shortcut.proj.weight", "g_s.shortcut.proj.bias"}
    assert new == set(old) | added


def test_conv_hybrid_with_the_shortcut_stays_at_cr_12():
    model = build_model("conv-hybrid", ["encoder.shortcut=linear"])
    assert model.recipe["decoder"].get("shortcut") is None  # inherited from the encoder, not written
    assert model.g_s.shortcut is not None and model.g_a.shortcut.proj.weight.shape == (16, 192, 1, 1)
    assert model.nominal_bits(32, 32) == 4 * 4 * 16 * 8  # 2 bpp: 24 / 2 = CR 12
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        plain = build_model("conv-hybrid")
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "shortcut" not in k})
        plain.eval()
        y = model.g_a(x)
        assert not torch.equal(y, plain.g_a(x))
        assert torch.allclose(y - plain.g_a(x), model.g_a.shortcut(F.pixel_unshuffle(x, 8)), atol=1e-5)
        assert model(x)["x_hat"].shape == (2, 3, 32, 32)


def test_gdn_shortcut_with_pca_reconstructs_the_top_components():
    model = build_model("factorized", ["encoder.shortcut=linear", "encoder.stages=2", "encoder.M=48"])
    x = smooth_images(32, 32, 32)
    init_from_data(model, x)
    mean, comps = block_pca(x, 4)
    assert torch.allclose(model.g_a.shortcut.proj.weight[:, :, 0, 0].double(), comps, atol=1e-6)
    assert torch.allclose(model.g_s.shortcut.proj.bias.double(), mean, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["encoder.factor=3"], "factor must be a power of two"),
        (["encoder.factor=64"], "factor must be in 1..32"),
        (["encoder.linear=false", "encoder.nonlinear=false"], "at least one of linear and nonlinear"),
        (["encoder.init='kmeans'"], "init must be one of"),
        (["encoder.gain=0"], "gain must be a number"),
        (["encoder.linear=1"], "linear must be true or false"),
    ],
)
def test_bad_block_options_are_one_line_errors(overrides, expected):
    with pytest.raises(RdkitError) as info:
        block_model(*overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("recipe", ["conv-mse", "factorized"])
def test_bad_shortcut_values_are_one_line_errors(recipe):
    cases = [("encoder.shortcut=yes", "shortcut must be one of"), ("encoder.shortcut_init=x", "shortcut_init must be")]
    for override, expected in cases:
        with pytest.raises(RdkitError) as info:
            build_model(recipe, [override])
        assert expected in str(info.value) and "\n" not in str(info.value)


class FirstWeights(Callback):
    """Keeps the model's linear analysis weights as on_train_start sees them (after the built-in data-init)."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def on_train_start(self, ctx):
        self.seen.append(ctx.model.g_a.linear.proj.weight.detach().clone())


def test_a_fresh_run_starts_from_the_training_data_pca_and_a_resume_from_last_pt(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    overrides = [*BLOCK, "encoder.channels=8", "train.batch_size=8", "train.crop_size=16"]
    first = FirstWeights()
    train("factorized", npz, tmp_path / "r", overrides=overrides, epochs=1, evaluate=False, callbacks=[first], **FAST)
    images = load_images(str(npz), "train", val_fraction=0.1, seed=0)
    patches = ImageDataset(images, 16, train=True, hflip=True, seed=0).__getitems__(list(range(len(images))))
    _, comps = block_pca(patches, 4)
    assert torch.allclose(first.seen[0].double()[:, :, 0, 0], comps, atol=1e-6)
    saved = load_checkpoint(tmp_path / "r" / "last.pt")["model"]["g_a.linear.proj.weight"]
    resumed = FirstWeights()
    train(None, npz, resume=tmp_path / "r", epochs=2, evaluate=False, callbacks=[resumed], **FAST)
    assert torch.equal(resumed.seen[0], saved)  # last.pt's weights: the resume did not re-initialise from the data
    assert not torch.allclose(saved, first.seen[0])  # (they were trained since the PCA)


class Layout(Callback):
    def __init__(self):
        self.nhwc: list[bool] = []

    def on_step_end(self, ctx):
        self.nhwc.append(ctx.model.g_a.residual[0].weight.is_contiguous(memory_format=torch.channels_last))


def test_channels_last_training_resumes_exactly_and_codes_real_bitstreams(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    overrides = [*BLOCK, "encoder.channels=8", "train.batch_size=8", "train.crop_size=16", "train.channels_last=true"]
    layout = Layout()
    kw = dict(overrides=overrides, epochs=2, **FAST)
    full = train("factorized", npz, tmp_path / "full", callbacks=[layout], **kw)
    assert layout.nhwc and all(layout.nhwc)
    assert full.eval is not None and full.eval["summary"]["bpp"] > 0  # coded to bytes and decoded by best.pt
    train("factorized", npz, tmp_path / "part", max_steps=3, evaluate=False, **kw)
    train(None, npz, resume=tmp_path / "part", epochs=2, evaluate=False, **FAST)
    for name in ("last.pt", "best.pt"):
        assert_same_weights(model_state(tmp_path / "full" / name), model_state(tmp_path / "part" / name))
