"""RDModel from every zoo recipe: forward, real-bytes round trips, any input size."""

from __future__ import annotations

import pytest
import torch
from compressai.models import CompressionModel

from rdkit_ae import build_model, build_objective, load_recipe

ZOO = ["conv-mse", "conv-hybrid", "conv-ste", "factorized", "hyperprior"]


def _ready(name, overrides=()):
    torch.manual_seed(0)
    model = build_model(name, list(overrides)).eval()
    model.update(force=True)
    return model


def _roundtrip(model, x):
    with torch.no_grad():
        ref = model(x)["x_hat"].clamp(0, 1)  # decompress clamps, as CompressAI's models do
        comp = model.compress(x)
        out = model.decompress(comp["strings"], comp["shape"], comp["size"])["x_hat"]
    return ref, out, comp


@pytest.mark.parametrize("name", ZOO)
def test_zoo_recipe_roundtrips_cifar_batch(name):
    model = _ready(name)
    assert isinstance(model, CompressionModel)
    x = torch.rand(2, 3, 32, 32)
    ref, out, comp = _roundtrip(model, x)
    assert out.shape == x.shape and torch.equal(ref, out)
    nbytes = [sum(len(s[i]) for s in comp["strings"]) for i in range(2)]
    assert all(n > 0 for n in nbytes)
    if name.startswith("conv"):
        assert nbytes == [256, 256]  # 4x4x16 latent at 8 bits: 2 bpp, CR 12
        assert model.nominal_bits(32, 32) == 2048


@pytest.mark.parametrize("name", ZOO)
def test_zoo_recipe_roundtrips_kodak_size(name, tiny_overrides):
    # Kodak-size input with the tiny variant of each recipe (same plugins, less compute).
    model = _ready(name, tiny_overrides[name])
    x = torch.rand(1, 3, 512, 768)
    ref, out, comp = _roundtrip(model, x)
    assert out.shape == x.shape and torch.equal(ref, out)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_recipe_full_size_kodak_forward(name):
    model = _ready(name)
    x = torch.rand(1, 3, 512, 768)
    ref, out, _ = _roundtrip(model, x)
    assert torch.equal(ref, out)


@pytest.mark.parametrize("size", [(33, 47), (17, 64), (1, 1)])
@pytest.mark.parametrize("name", ["conv-mse", "hyperprior"])
def test_any_size_is_padded_and_cropped(name, size, tiny_overrides):
    model = _ready(name, tiny_overrides[name])
    x = torch.rand(1, 3, *size)
    ref, out, comp = _roundtrip(model, x)
    assert out.shape == x.shape and comp["size"] == size and torch.equal(ref, out)


def test_stride_includes_hyperprior():
    assert build_model("factorized").stride == 8
    assert build_model("hyperprior").stride == 16
    assert build_model("conv-mse").stride == 8


def test_training_step_has_gradients_and_aux_loss(tiny_overrides):
    model = build_model("factorized", tiny_overrides["factorized"]).train()
    objective = build_objective("factorized")
    x = torch.rand(2, 3, 32, 32)
    total, terms = objective(x, model(x))
    assert set(terms) == {"mse", "rate"} and torch.isfinite(total)
    total.backward()
    assert all(
        p.grad is not None
        for n, p in model.named_parameters()
        if not n.endswith("quantiles") and p.requires_grad and "g_" in n
    )
    aux = model.aux_loss()
    assert aux.requires_grad and torch.isfinite(aux)


def test_decoder_mirrors_encoder_unless_set():
    model = build_model("conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=6"])
    assert model.g_a.out_channels == 6 and model.g_s.in_channels == 6
    assert model.latent_codec.channels == 6
    model = build_model("conv-mse", ["encoder.channels=[8, 16]", "decoder.channels=[4, 12]"])
    assert sum(p.numel() for p in model.g_s.parameters()) != sum(p.numel() for p in model.g_a.parameters())


def test_build_accepts_recipe_objects_and_overrides():
    r = load_recipe("conv-mse", ["quantizer.bits=4"])
    assert build_model(r).nominal_bits(32, 32) == 1024
    assert build_model("conv-mse", ["quantizer.bits=6"]).nominal_bits(32, 32) == 1536
