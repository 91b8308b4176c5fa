"""Quantizer mean-scale-hyperprior: shapes, bit-exact coding at any size, gradients, .rdk files, CompressAI layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.models import MeanScaleHyperprior
from synthetic import smooth_images

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.codec import Codec
from rdkit_ae.errors import FormatError, PluginError
from rdkit_ae.model import build_model, build_objective
from rdkit_ae.plugins.meanscale import MeanScaleHyperpriorQuantizer
from rdkit_ae.recipe import load_recipe
from rdkit_ae.registry import create, list_plugins

TINY = ["encoder.N=16", "encoder.M=24", "encoder.stages=2", "quantizer.N=16"]  # stride 4 * 4 = 16
KODAK = Path("/work/shared/data/kodak/kodim01.png")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("mbt2018-mean", TINY)
    with torch.no_grad():  # random init gives latents near 0: widen them so many symbols are coded
        model.g_a.net[-1].weight.mul_(30.0)
    model.eval().update(force=True)
    return model


def latent(B=2, k=24, h=8, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, k, h, w, generator=g) * 3.0


def test_registered_with_summary_and_checks():
    info = {p.name: p for p in list_plugins("quantizer")}["mean-scale-hyperprior"]
    assert info.origin == "built-in" and "mean-scale" in info.summary
    q = create("quantizer", "mean-scale-hyperprior", channels=24, N=16)
    assert q.stride == 4 and q.N == 16
    with pytest.raises(PluginError, match="hyper_stages must be"):
        create("quantizer", "mean-scale-hyperprior", channels=24, hyper_stages=0)


@pytest.mark.parametrize("train", [True, False])
def test_forward_shapes_and_likelihoods(train):
    q = MeanScaleHyperpriorQuantizer(24, N=16).train(train)
    y = latent()
    out = q(y)
    assert out["y_hat"].shape == y.shape
    assert set(out["likelihoods"]) == {"y", "z"}
    assert out["likelihoods"]["z"].shape == (2, 16, 2, 3)
    assert all(((t > 0) & (t <= 1)).all() for t in out["likelihoods"].values())


def test_hyper_analysis_sees_the_sign_of_y():
    # The means need the sign: h_a takes y (the scale-only hyperprior takes |y|).
    q = MeanScaleHyperpriorQuantizer(24, N=16).eval()
    y = latent(B=1)
    assert not torch.equal(q.hyper.h_a(y), q.hyper.h_a(-y))


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_quantizer_bit_exact_with_eval_forward(stages):
    q = MeanScaleHyperpriorQuantizer(24, N=16, hyper_stages=stages)
    q.update(force=True)
    q.eval()
    s = 2**stages
    y = latent(h=2 * s, w=3 * s)
    c = q.compress(y)
    assert c["shape"] == {"y": (2 * s, 3 * s), "hyper": (2, 3)}
    assert len(c["strings"]) == 2 and all(len(stream) == 2 for stream in c["strings"])
    assert q.bitstream_layout(2 * s, 3 * s) == (c["shape"], len(c["strings"]))
    y_hat = q.decompress(c["strings"], c["shape"])["y_hat"]
    assert torch.equal(y_hat, q(y)["y_hat"])
    assert torch.equal(y_hat, c["y_hat"])
    # y is coded around its predicted mean: rounding y itself would differ
    assert not torch.equal(y_hat, torch.round(y))


def _images(h, w, n=2, seed=0):
    x = torch.from_numpy(smooth_images(n, h, w, seed)).permute(0, 3, 1, 2).float() / 255.0
    return x.contiguous()


def _kodak_crop(h, w):
    if not KODAK.is_file():
        pytest.skip("Kodak images not present (/work/shared/data/kodak)")
    from PIL import Image

    with Image.open(KODAK) as im:
        a = np.asarray(im.convert("RGB"))[:h, :w]
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div(255.0).contiguous()


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (30, 45), "kodak"])
def test_model_bit_exact_at_any_size(size):
    model = tiny_model()
    x = _kodak_crop(96, 128) if size == "kodak" else _images(*size)
    c = model.compress(x)
    x_hat = model.decompress(c["strings"], c["shape"], c["size"])["x_hat"]
    assert x_hat.shape == x.shape
    assert torch.equal(x_hat, model(x)["x_hat"].clamp(0, 1))  # decompress clamps, as CompressAI's models do
    nbytes = [sum(len(s[i]) for s in c["strings"]) for i in range(x.size(0))]
    assert all(n > 8 for n in nbytes)


def test_gradients_reach_every_part():
    torch.manual_seed(0)
    model = build_model("mbt2018-mean", TINY).train()
    objective = build_objective(load_recipe("mbt2018-mean", TINY))
    x = _images(32, 32)
    total, terms = objective(x, model(x))
    assert set(terms) == {"mse", "rate"} and terms["rate"] > 0
    total.backward()
    q = model.latent_codec
    for part in (model.g_a, model.g_s, q.hyper.h_a, q.hyper.h_s):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    eb = q.hyper.entropy_bottleneck
    assert eb.quantiles.grad is None
    model.aux_loss().backward()
    assert eb.quantiles.grad is not None and eb.quantiles.grad.abs().sum() > 0


def test_bad_strings_and_shapes_are_refused():
    q = MeanScaleHyperpriorQuantizer(24, N=16)
    q.update(force=True)
    c = q.eval().compress(latent())
    with pytest.raises(FormatError, match="2 stream"):
        q.decompress(c["strings"][:1], c["shape"])
    with pytest.raises(FormatError, match="shape must be"):
        q.decompress(c["strings"], (8, 12))
    with pytest.raises(FormatError, match="hyper-latent gives"):
        q.decompress(c["strings"], {"y": (9, 12), "hyper": (2, 3)})
    with pytest.raises(FormatError, match="expected a"):
        q.compress(torch.zeros(1, 23, 8, 8))


def test_rdk_files_round_trip(tmp_path):
    model = tiny_model()
    path = tmp_path / "ms.pt"
    save_checkpoint(path, model, model.recipe)
    codec = Codec.load(path)
    for image in [smooth_images(1, 40, 52, seed=3)[0], smooth_images(1, 64, 64, seed=4)[0]]:
        data = codec.compress(image)
        assert np.array_equal(codec.decompress(data), codec.reconstruct(image))
    assert Codec.from_model(model).id == codec.id


def test_layers_are_compressai_mean_scale_hyperprior():
    ours = MeanScaleHyperpriorQuantizer(192, N=128)
    theirs = MeanScaleHyperprior(128, 192)
    for name in ("h_a", "h_s"):
        a = {k: v.shape for k, v in getattr(ours.hyper, name).state_dict().items()}
        b = {k: v.shape for k, v in getattr(theirs, name).state_dict().items()}
        assert a == b
        kinds_a = [type(m).__name__ for m in getattr(ours.hyper, name)]
        kinds_b = [type(m).__name__ for m in getattr(theirs, name)]
        assert kinds_a == kinds_b
