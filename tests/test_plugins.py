"""Built-in encoders and decoders (conv, gdn) and their registration."""

from __future__ import annotations

import pytest
import torch

from rdkit_ae.errors import PluginError
from rdkit_ae.registry import BUILTIN, accepted_params, create, get_plugin, list_plugins

SIZES = [(32, 32), (64, 96)]


def _pair(name, **params):
    enc = create("encoder", name, **params)
    dec_accepts = accepted_params(get_plugin("decoder", name).factory)
    dec = create("decoder", name, **{k: v for k, v in params.items() if k in dec_accepts})
    return enc, dec


# -- registry -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,names",
    [
        ("encoder", {"conv", "gdn"}),
        ("decoder", {"conv", "gdn"}),
        ("quantizer", {"uniform", "ste", "factorized-entropy", "hyperprior"}),
        ("loss", {"mse", "rate", "ssim", "ms-ssim", "vgg-perceptual"}),
    ],
)
def test_builtins_registered_with_summaries(kind, names):
    infos = {p.name: p for p in list_plugins(kind)}
    assert names <= set(infos)
    for name in names:
        assert infos[name].origin == BUILTIN
        assert infos[name].summary and len(infos[name].summary) < 120


@pytest.mark.parametrize("name", ["conv", "gdn"])
def test_decoder_takes_encoder_param_names(name):
    enc = accepted_params(get_plugin("encoder", name).factory)
    dec = accepted_params(get_plugin("decoder", name).factory)
    assert enc <= dec


# -- conv -------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_conv_shapes(size):
    enc, dec = _pair("conv")
    H, W = size
    x = torch.rand(2, 3, H, W)
    y = enc(x)
    assert enc.stride == 8 and enc.out_channels == 16 and dec.in_channels == 16
    assert y.shape == (2, 16, H // 8, W // 8)
    assert dec(y).shape == (2, 3, H, W)


def test_conv_default_is_4x4x16_on_cifar():
    enc = create("encoder", "conv")
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, 16, 4, 4)


def test_conv_custom_channels():
    enc, dec = _pair("conv", channels=[8, 16], latent_channels=4)
    assert enc.stride == 4 and enc.out_channels == 4 and dec.in_channels == 4
    y = enc(torch.rand(1, 3, 32, 32))
    assert y.shape == (1, 4, 8, 8)
    assert dec(y).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "silu", "elu"])
def test_conv_norms_and_activations(norm, activation):
    enc, dec = _pair("conv", channels=[8, 16], latent_channels=4, norm=norm, activation=activation)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    dec(enc(x)).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("upsample", ["transpose", "nearest", "bilinear"])
@pytest.mark.parametrize("size", SIZES)
def test_conv_upsample_modes(upsample, size):
    enc, dec = _pair("conv", channels=[8, 16, 16], latent_channels=4)
    dec = create("decoder", "conv", channels=[8, 16, 16], latent_channels=4, upsample=upsample)
    H, W = size
    assert dec(enc(torch.rand(1, 3, H, W))).shape == (1, 3, H, W)


@pytest.mark.parametrize("output", ["sigmoid", "clamp"])
def test_conv_output_bounded(output):
    dec = create("decoder", "conv", channels=[8, 16], latent_channels=4, output=output)
    x_hat = dec(torch.randn(2, 4, 8, 8) * 100)
    assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0


def test_conv_output_none_unbounded():
    torch.manual_seed(0)
    dec = create("decoder", "conv", channels=[8, 16], latent_channels=4, output="none", norm="none")
    x_hat = dec(torch.randn(2, 4, 8, 8) * 1000)
    assert x_hat.min() < 0.0 or x_hat.max() > 1.0


@pytest.mark.parametrize(
    "kind,param,value",
    [
        ("encoder", "norm", "layer"),
        ("encoder", "activation", "tanh"),
        ("decoder", "upsample", "pixelshuffle"),
        ("decoder", "output", "tanh"),
        ("decoder", "norm", "BATCH"),
    ],
)
def test_conv_unknown_option_lists_allowed(kind, param, value):
    with pytest.raises(PluginError) as err:
        create(kind, "conv", **{param: value})
    msg = str(err.value)
    assert param in msg and repr(value) in msg and "\n" not in msg
    assert {"norm": "'group'", "activation": "'silu'", "upsample": "'bilinear'", "output": "'clamp'"}[param] in msg


@pytest.mark.parametrize("params", [{"channels": []}, {"channels": [8, 0]}, {"latent_channels": 0}, {"channels": 8}])
def test_conv_bad_sizes(params):
    with pytest.raises(PluginError):
        create("encoder", "conv", **params)


# -- gdn ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stages", [1, 2, 4])
def test_gdn_shapes(size, stages):
    enc, dec = _pair("gdn", N=8, M=12, stages=stages)
    H, W = size
    s = 2**stages
    y = enc(torch.rand(2, 3, H, W))
    assert enc.stride == s and enc.out_channels == 12 and dec.in_channels == 12
    assert y.shape == (2, 12, H // s, W // s)
    assert dec(y).shape == (2, 3, H, W)


def test_gdn_defaults_follow_paper():
    enc, dec = _pair("gdn")
    assert (enc.N, enc.M, enc.stride, enc.out_channels, dec.in_channels) == (128, 192, 16, 192, 192)
    from compressai.layers import GDN

    gdns = [m for m in enc.modules() if isinstance(m, GDN)]
    igdns = [m for m in dec.modules() if isinstance(m, GDN)]
    assert len(gdns) == 3 and not any(m.inverse for m in gdns)
    assert len(igdns) == 3 and all(m.inverse for m in igdns)
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, 192, 2, 2)


def test_gdn_bad_stages():
    with pytest.raises(PluginError, match="stages"):
        create("encoder", "gdn", stages=0)


# -- gradients -------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [("conv", {"channels": [8, 16]}), ("gdn", {"N": 8, "M": 12, "stages": 2})])
def test_gradients_reach_input_and_params(name, params):
    enc, dec = _pair(name, **params)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    ((dec(enc(x)) - x) ** 2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for module in (enc, dec):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
