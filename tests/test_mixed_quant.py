"""Mixed quantization (Minnen & Singh 2020): noisy rate, straight-through rounded latents for the decoder."""

from __future__ import annotations

import pytest
import torch

from rdkit_ae.errors import PluginError
from rdkit_ae.registry import create

K = 8


def latent(seed: int = 0, B: int = 2, h: int = 8, w: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, h, w, generator=g) * 4.0).requires_grad_(True)


def quantizer(name: str, mixed: bool, seed: int = 0):
    torch.manual_seed(seed)
    params = {"N": 8, "hyper_stages": 1} if name != "factorized-entropy" else {}
    return create("quantizer", name, channels=K, mixed=mixed, **params)


def centres(q, y: torch.Tensor) -> torch.Tensor:
    """What the decoder's latent is rounded around: medians, zero (scale hyperprior) or the predicted means."""
    name = type(q).__name__
    if name == "FactorizedEntropyQuantizer":
        return q.entropy_bottleneck._get_medians().detach().reshape(1, K, 1, 1)
    if name == "HyperpriorQuantizer":
        return torch.zeros_like(y)
    params = q.hyper(y)["params"]  # z is rounded with a straight-through gradient: no noise here
    return params.chunk(2, 1)[1].detach()


NAMES = ["factorized-entropy", "hyperprior", "mean-scale-hyperprior"]


@pytest.mark.parametrize("name", NAMES)
def test_decoder_sees_rounded_latents_and_gradients_flow(name):
    q = quantizer(name, mixed=True).train()
    y = latent()
    out = q(y)
    mu = centres(q, y)
    assert torch.equal(out["y_hat"].detach(), torch.round(y.detach() - mu) + mu)
    out["y_hat"].sum().backward()
    # round() passes the gradient straight through: d y_hat / d y = 1 (the means' own paths cancel).
    assert torch.allclose(y.grad, torch.ones_like(y), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_rate_term_still_uses_noise(name):
    y = latent()
    m, q = quantizer(name, mixed=True).train(), quantizer(name, mixed=False).train()
    torch.manual_seed(3)
    mixed = m(y)
    torch.manual_seed(3)
    noisy = q(y)
    for key in noisy["likelihoods"]:
        if name == "factorized-entropy" or key == "z":  # same noise draws, same likelihoods
            assert torch.equal(mixed["likelihoods"][key], noisy["likelihoods"][key])
    # Without mixed, the decoder gets noisy latents: not on the integer grid around the centres.
    mu = centres(q, y)
    frac = (noisy["y_hat"] - mu).detach()
    assert not torch.allclose(frac, torch.round(frac))
    assert q.mixed is False and quantizer(name, mixed=True).mixed is True


@pytest.mark.parametrize("name", NAMES)
def test_eval_forward_is_unchanged(name):
    plain = quantizer(name, mixed=False).eval()
    mixed = quantizer(name, mixed=True).eval()
    mixed.load_state_dict(plain.state_dict())
    y = latent().detach()
    a, b = plain(y), mixed(y)
    assert torch.equal(a["y_hat"], b["y_hat"])
    for key in a["likelihoods"]:
        assert torch.equal(a["likelihoods"][key], b["likelihoods"][key])


@pytest.mark.parametrize("name", NAMES)
def test_default_is_off_and_bad_values_refused(name):
    params = {"N": 8} if name != "factorized-entropy" else {}
    assert create("quantizer", name, channels=K, **params).mixed is False
    with pytest.raises(PluginError, match="mixed must be true or false"):
        create("quantizer", name, channels=K, mixed="yes", **params)


def test_checkerboard_mixed_rounds_around_means_and_noise_pass_does_not():
    torch.manual_seed(0)
    q = create("quantizer", "checkerboard", channels=K, N=8, hyper_stages=1).train()
    assert q.mixed is True
    y = latent()
    out = q(y)
    y_hat = out["y_hat"]
    # Two passes: every latent is y rounded around some predicted mean, with gradient 1 to y.
    assert torch.all((y_hat - y).abs() <= 0.5 + 1e-4)
    y_hat.sum().backward()
    assert torch.allclose(y.grad, torch.ones_like(y), atol=1e-4)
    torch.manual_seed(0)
    noisy = create("quantizer", "checkerboard", channels=K, N=8, hyper_stages=1, mixed=False).train()
    z = latent().detach()
    torch.manual_seed(1)
    a = noisy(z)["y_hat"]
    torch.manual_seed(2)
    b = noisy(z)["y_hat"]
    assert not torch.equal(a, b)  # additive noise: each call draws its own
