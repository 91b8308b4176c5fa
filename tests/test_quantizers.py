"""Built-in quantizers: uniform, ste, factorized-entropy, hyperprior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from plugin_helpers import CodecWrapper

from rdkit_ae.errors import FormatError, PluginError
from rdkit_ae.registry import create

K = 16
NAMES = ["uniform", "ste", "factorized-entropy", "hyperprior"]


def make(name, channels=K, **params):
    if name == "hyperprior":
        params.setdefault("N", 16)
    return create("quantizer", name, channels=channels, **params)


def ready(q):
    """Eval mode with entropy-model tables built, as the model builder's update() does."""
    wrapper = CodecWrapper(q)
    wrapper.update(force=True)
    return q.eval()


def latent(B=2, k=K, h=4, w=4, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, k, h, w, generator=g) * scale


# -- shapes and likelihoods -------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [True, False])
def test_forward_shapes(name, train):
    q = make(name).train(train)
    y = latent(h=8, w=12)
    out = q(y)
    assert out["y_hat"].shape == y.shape
    lik = out["likelihoods"]
    assert lik["y"].shape == y.shape
    assert all(((t > 0) & (t <= 1)).all() for t in lik.values())
    if name == "hyperprior":
        assert set(lik) == {"y", "z"} and lik["z"].shape == (2, 16, 2, 3)
    else:
        assert set(lik) == {"y"}


def test_strides_and_bits():
    assert make("uniform").stride == 1 and make("uniform").bits == 8
    assert make("ste", bits=3).bits == 3
    assert make("factorized-entropy").stride == 1
    assert not hasattr(make("factorized-entropy"), "bits")
    assert make("hyperprior").stride == 4
    assert make("hyperprior", hyper_stages=3).stride == 8
    assert make("uniform").channels == K


# -- fixed-rate: train vs eval --------------------------------------------------------
def _grid(q, y):
    u = torch.sigmoid(y) if q.bound == "sigmoid" else y.clamp(0, 1)
    return u * (2**q.bits - 1)


def test_uniform_train_adds_noise_eval_rounds():
    q = make("uniform", bits=4)
    y = latent()
    v = _grid(q, y)
    v_train = q.train()(y)["y_hat"] * 15
    assert (v_train - v).abs().max() <= 0.5 + 1e-5
    assert not torch.allclose(v_train, torch.round(v_train), atol=1e-3)  # off the grid
    v_eval = q.eval()(y)["y_hat"] * 15
    assert torch.allclose(v_eval, torch.round(v), atol=1e-4)
    y_hat = q(y)["y_hat"]
    assert y_hat.min() >= 0 and y_hat.max() <= 1


def test_uniform_train_has_gradient():
    q = make("uniform").train()
    y = latent().requires_grad_()
    q(y)["y_hat"].sum().backward()
    assert torch.allclose(y.grad, torch.sigmoid(y) * (1 - torch.sigmoid(y)), atol=1e-6)


def test_ste_rounds_in_training_with_identity_gradient():
    q = make("ste", bits=4, bound="clamp").train()
    y = torch.rand(2, K, 4, 4).mul(0.98).add(0.01).requires_grad_()  # inside (0, 1)
    y_hat = q(y)["y_hat"]
    assert torch.equal(y_hat, q.eval()(y)["y_hat"])  # train output is already rounded
    y_hat.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))  # d round / dv = 1, d clamp = 1 inside


def test_ste_sigmoid_gradient_is_sigmoid_derivative():
    q = make("ste").train()
    y = latent().requires_grad_()
    q(y)["y_hat"].sum().backward()
    s = torch.sigmoid(y.detach())
    assert torch.allclose(y.grad, s * (1 - s), atol=1e-6)


@pytest.mark.parametrize("name", ["uniform", "ste"])
def test_fixed_rate_likelihood_is_two_to_minus_bits(name):
    q = make(name, bits=5)
    lik = q(latent())["likelihoods"]["y"]
    assert torch.equal(-torch.log2(lik), torch.full_like(lik, 5.0))


@pytest.mark.parametrize("params", [{"bits": 0}, {"bits": 17}, {"bits": 2.5}, {"bound": "tanh"}, {"channels": 0}])
def test_fixed_rate_bad_params(params):
    params = {"channels": K, **params}
    with pytest.raises(PluginError):
        create("quantizer", "uniform", **params)


# -- entropy-coded: train vs eval -----------------------------------------------------
@pytest.mark.parametrize("name", ["factorized-entropy", "hyperprior"])
def test_entropy_train_noise_eval_integer(name):
    q = make(name)
    y = latent()
    torch.manual_seed(0)
    y_train = q.train()(y)["y_hat"]
    assert (y_train - y).abs().max() <= 0.5 + 1e-5 and not torch.equal(y_train, y)
    y_eval = q.eval()(y)["y_hat"]
    if name == "hyperprior":  # zero-mean Gaussian: plain rounding
        assert torch.equal(y_eval, torch.round(y))
    else:  # rounding around the learned medians
        med = q.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        assert torch.allclose(y_eval, torch.round(y - med) + med)


@pytest.mark.parametrize("name", ["factorized-entropy", "hyperprior"])
def test_aux_loss_finite_with_gradient(name):
    q = make(name)
    wrapper = CodecWrapper(q)
    aux = wrapper.aux_loss()
    assert aux.dim() == 0 and torch.isfinite(aux)
    aux.backward()
    eb = q.entropy_bottleneck if name == "factorized-entropy" else q.hyper.entropy_bottleneck
    assert eb.quantiles.grad is not None and eb.quantiles.grad.abs().sum() > 0
    assert torch.allclose(q.aux_loss(), aux)


@pytest.mark.parametrize("name", ["factorized-entropy", "hyperprior"])
def test_rate_gradient_reaches_latent(name):
    q = make(name).train()
    y = latent().requires_grad_()
    out = q(y)
    bits = sum(-torch.log2(t).sum() for t in out["likelihoods"].values())
    bits.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


# -- bitstreams ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("B", [2, 1])
def test_round_trip_bit_exact(name, B):
    q = ready(make(name))
    y = latent(B=B, h=8, w=8)
    c = q.compress(y)
    assert all(len(stream) == B for stream in c["strings"])
    assert all(isinstance(s, bytes) and len(s) > 0 for stream in c["strings"] for s in stream)
    d = q.decompress(c["strings"], c["shape"])
    ref = q(y)["y_hat"]
    assert torch.equal(d["y_hat"], ref)
    assert torch.equal(c["y_hat"], ref)


@pytest.mark.parametrize("name", NAMES)
def test_batched_compress_matches_single_images(name):
    q = ready(make(name))
    y = latent(B=3, h=4, w=4)
    together = q.compress(y)["strings"]
    for i in range(3):
        alone = q.compress(y[i : i + 1])["strings"]
        assert [stream[i] for stream in together] == [stream[0] for stream in alone]


def test_stream_counts_and_shapes():
    y = latent(h=8, w=8)
    assert len(ready(make("uniform")).compress(y)["strings"]) == 1
    assert ready(make("uniform")).compress(y)["shape"] == (8, 8)
    assert len(ready(make("factorized-entropy")).compress(y)["strings"]) == 1
    c = ready(make("hyperprior")).compress(y)
    assert len(c["strings"]) == 2 and c["shape"] == {"y": (8, 8), "hyper": (2, 2)}


@pytest.mark.parametrize("name", ["uniform", "ste"])
@pytest.mark.parametrize(
    "bits,k,h,w",
    [(8, 16, 4, 4), (3, 16, 4, 4), (3, 5, 3, 3), (1, 3, 1, 1), (16, 2, 2, 3), (7, 16, 4, 4)],
)
def test_fixed_rate_exact_byte_count(name, bits, k, h, w):
    q = ready(make(name, channels=k, bits=bits))
    c = q.compress(latent(B=2, k=k, h=h, w=w))
    expected = math.ceil(h * w * k * bits / 8)
    assert [len(s) for s in c["strings"][0]] == [expected, expected]
    if (bits, k, h, w) == (8, 16, 4, 4):
        assert expected == 256
    if (bits, k, h, w) == (3, 5, 3, 3):
        assert expected == 17  # 135 bits
    assert torch.equal(q.decompress(c["strings"], c["shape"])["y_hat"], q(latent(B=2, k=k, h=h, w=w))["y_hat"])


def test_fixed_rate_bit_layout_big_endian_channel_major():
    q = ready(make("uniform", channels=2, bits=4, bound="clamp"))
    # symbols: channel 0 = [15, 1], channel 1 = [0, 8]  (h=1, w=2)
    y = torch.tensor([[[[1.0, 1 / 15]], [[0.0, 8 / 15]]]])
    (s,) = q.compress(y)["strings"][0]
    assert s == bytes([0xF1, 0x08])
    q8 = ready(make("uniform", channels=2, bits=8, bound="clamp"))
    y8 = torch.tensor([[[[0.0, 1.0]], [[3 / 255, 128 / 255]]]])
    assert q8.compress(y8)["strings"][0][0] == bytes([0, 255, 3, 128])
    q3 = ready(make("uniform", channels=1, bits=3, bound="clamp"))
    y3 = torch.tensor([[[[1.0, 0.0, 5 / 7]]]])  # 111 000 101 + 7 zero padding bits
    assert q3.compress(y3)["strings"][0][0] == bytes([0b11100010, 0b10000000])


@pytest.mark.parametrize("bits", [1, 2, 8, 13, 16])
@pytest.mark.parametrize("bound", ["sigmoid", "clamp"])
def test_symbol_round_trip_extremes(bits, bound):
    q = ready(make("uniform", channels=4, bits=bits, bound=bound))
    y = torch.tensor([-1e6, -50.0, -1.0, 0.0, 0.5, 1.0, 50.0, 1e6]).repeat(2, 4, 1, 1).reshape(2, 4, 2, 4)
    c = q.compress(y)
    y_hat = q.decompress(c["strings"], c["shape"])["y_hat"]
    assert torch.equal(y_hat, q(y)["y_hat"])
    assert y_hat.min() == 0.0 and y_hat.max() == 1.0
    symbols = torch.round(y_hat * (2**bits - 1))
    assert symbols.min() == 0 and symbols.max() == 2**bits - 1


@settings(max_examples=25, deadline=None)
@given(
    bits=st.integers(1, 16),
    k=st.integers(1, 5),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    B=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_fixed_rate_round_trip_property(bits, k, h, w, B, seed):
    q = make("uniform", channels=k, bits=bits).eval()
    y = latent(B=B, k=k, h=h, w=w, scale=4.0, seed=seed)
    c = q.compress(y)
    assert all(len(s) == math.ceil(k * h * w * bits / 8) for s in c["strings"][0])
    assert torch.equal(q.decompress(c["strings"], c["shape"])["y_hat"], q(y)["y_hat"])


@pytest.mark.parametrize("name", ["uniform", "ste"])
def test_wrong_length_string_is_format_error(name):
    q = ready(make(name))
    c = q.compress(latent())
    strings = [[c["strings"][0][0], c["strings"][0][1][:-1]]]
    with pytest.raises(FormatError, match="image 1 has 255 bytes, expected 256"):
        q.decompress(strings, c["shape"])
    with pytest.raises(FormatError):
        q.decompress([[s + b"\0" for s in c["strings"][0]]], c["shape"])
    with pytest.raises(FormatError):
        q.decompress(c["strings"], (4, 5))  # wrong shape -> wrong expected length


@pytest.mark.parametrize("name", NAMES)
def test_wrong_stream_count_is_format_error(name):
    q = ready(make(name))
    c = q.compress(latent())
    with pytest.raises(FormatError):
        q.decompress(c["strings"] + [c["strings"][0]], c["shape"])
    with pytest.raises(FormatError):
        q.decompress([["not bytes"] * 2] * len(c["strings"]), c["shape"])


def test_decompress_follows_module_device_and_dtype():
    q = ready(make("uniform"))
    c = q.compress(latent())
    y_hat = q.decompress(c["strings"], c["shape"])["y_hat"]
    assert y_hat.dtype == torch.float32 and y_hat.device.type == "cpu"
    assert "_device_anchor" not in q.state_dict()


@pytest.mark.parametrize("name", ["factorized-entropy", "hyperprior"])
def test_entropy_coded_bytes_track_rate(name):
    """Real byte counts are positive and close to the likelihood estimate."""
    q = ready(make(name))
    y = latent(B=2, h=8, w=8, scale=2.0)
    c = q.compress(y)
    nbytes = sum(len(s) for stream in c["strings"] for s in stream)
    est_bits = sum(-torch.log2(t).sum() for t in q(y)["likelihoods"].values()).item()
    assert nbytes > 0
    assert nbytes * 8 >= 0.8 * est_bits
    assert nbytes * 8 <= est_bits * 2 + 2 * 64 * 8


def test_uniform_state_dict_is_empty_and_builder_style_create():
    q = create("quantizer", "uniform", channels=4, bits=2)
    assert q.state_dict() == {} or list(q.state_dict()) == []
    with pytest.raises(PluginError, match="has no parameter 'levels'"):
        create("quantizer", "uniform", channels=4, levels=3)


def test_numpy_packbits_assumption():
    # The format relies on packbits padding the last byte with zero bits.
    assert np.packbits(np.array([[1, 0, 1]], dtype=np.uint8), axis=1).tolist() == [[0b10100000]]
