"""Evaluation padding: ``--pad compressai`` gives the figures of CompressAI's own eval_model.

CompressAI models with random, perturbed weights are imported as rdkit-ae
models; the same PNG files are evaluated by ``compressai.utils.eval_model``'s
functions (on the CompressAI model) and by :func:`rdkit_ae.evaluation.evaluate`
with ``pad="compressai"`` (on the imported one), at sizes that need padding.
eval_model always computes MS-SSIM, which pytorch-msssim refuses below 161
pixels a side; for the small sizes only that function is replaced (bpp and
PSNR are still CompressAI's own code).

bpp is compared to 1e-12 (the same bytes over the same pixels). PSNR to 1e-6
relative, or 1e-5 dB where that is looser: eval_model computes PSNR in float32
(``20 log10(255) - 10 log10(mse)``, two ~48 dB terms each good to ~4e-6 dB),
which at the ~5 dB of random weights is a few 1e-6 relative off the exact value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.utils.eval_model import __main__ as ca_eval
from compressai.zoo.image import model_architectures
from PIL import Image
from synthetic import smooth_images
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.codec.portability import entropy_path
from rdkit_ae.data.sources import load_images
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation import evaluate
from rdkit_ae.evaluation.padding import pad_for_eval
from rdkit_ae.interop import import_compressai, import_compressai_checkpoint

ARCHS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]
SMALL = [(32, 32), (50, 70), (70, 50)]  # (H, W): none a multiple of 64
LARGE = [(165, 170), (176, 230)]  # MS-SSIM runs on these: eval_model unchanged
PSNR_FLOAT32 = 1e-5  # dB: the resolution of eval_model's float32 PSNR (see above)
runner = CliRunner()


def _last_conv(seq):
    return [m for m in seq if hasattr(m, "weight")][-1]


def perturbed(arch: str, N: int = 32, M: int = 48, seed: int = 0):
    """A small CompressAI model with weights far from its initialisation (as in test_interop.py)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model_architectures[arch](N, M)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * (p.std() if p.numel() > 1 else 1.0))
        _last_conv(model.g_a).weight.mul_(100.0)
        if hasattr(model, "h_s"):
            _last_conv(model.h_a).weight.mul_(10.0)
            last = _last_conv(model.h_s)
            last.weight.mul_(100.0)
            last.bias[:M].add_(3.0)
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """arch -> (CompressAI model, imported RDModel, path of the CompressAI weights)."""
    root = tmp_path_factory.mktemp("ca")
    out = {}
    for i, arch in enumerate(ARCHS):
        theirs = perturbed(arch, seed=i)
        path = root / f"{arch}.pth.tar"
        torch.save(theirs.state_dict(), path)
        ours, _ = import_compressai(arch, weights=path)
        out[arch] = (theirs, ours, path)
    return out


def _folder(root: Path, sizes) -> Path:
    root.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(smooth_images(1, h, w, seed=i)[0]).save(root / f"img{i}.png")
    return root


def _compressai_per_image(model, folder: Path) -> dict[str, dict[str, float]]:
    """CompressAI's inference() on each image, read by its own read_image()."""
    return {p.stem: ca_eval.inference(model, ca_eval.read_image(p)) for p in ca_eval.collect_images(str(folder))}


def _assert_same(ours_res, theirs_by_name):
    assert len(ours_res.records) == len(theirs_by_name)
    for rec in ours_res.records:
        ref = theirs_by_name[Path(rec["name"]).stem]
        assert rec["bpp"] == pytest.approx(ref["bpp"], rel=1e-12, abs=0)
        assert rec["psnr"] == pytest.approx(ref["psnr-rgb"], rel=1e-6, abs=PSNR_FLOAT32)
        if rec["ms_ssim"] is not None:
            assert rec["ms_ssim"] == pytest.approx(ref["ms-ssim-rgb"], rel=1e-5)


def _no_ms_ssim(org, rec, data_range):
    return torch.tensor(float("nan"))


@pytest.mark.parametrize("arch", ARCHS)
def test_small_images_match_compressai_inference(models, arch, tmp_path, monkeypatch):
    theirs, ours, _ = models[arch]
    folder = _folder(tmp_path / "img", SMALL)
    monkeypatch.setattr(ca_eval, "ms_ssim", _no_ms_ssim)  # refuses images under 161 pixels a side
    with entropy_path(ours, portable=False):  # CompressAI's own arithmetic: the same bytes as its inference
        res = evaluate(ours, load_images(folder), pad="compressai", batch_size=1)
    assert res.meta["pad"] == "compressai" and res.meta["bit_exact_checked"]
    _assert_same(res, _compressai_per_image(theirs, folder))


@pytest.mark.parametrize("arch", ARCHS)
def test_large_images_match_eval_model_means(models, arch, tmp_path):
    theirs, ours, _ = models[arch]
    folder = _folder(tmp_path / "img", LARGE)
    paths = ca_eval.collect_images(str(folder))
    means = ca_eval.eval_model(theirs, tmp_path, folder, paths, architecture=arch, half=False, per_image=False)
    with entropy_path(ours, portable=False):  # CompressAI's own arithmetic: the same bytes as its inference
        res = evaluate(ours, load_images(folder), pad="compressai")
    _assert_same(res, _compressai_per_image(theirs, folder))
    assert res.summary["bpp"] == pytest.approx(means["bpp"], rel=1e-12, abs=0)
    assert res.summary["psnr"] == pytest.approx(means["psnr-rgb"], rel=1e-6, abs=PSNR_FLOAT32)
    assert res.summary["ms_ssim"] == pytest.approx(means["ms-ssim-rgb"], rel=1e-5)


def test_replicate_is_the_default_and_differs_where_padding_is_needed(models, tmp_path):
    _, ours, _ = models["bmshj2018-hyperprior"]
    images = load_images(_folder(tmp_path / "img", [(50, 70)]))
    default = evaluate(ours, images)
    compressai = evaluate(ours, images, pad="compressai")
    assert default.meta["pad"] == "replicate" and compressai.meta["pad"] == "compressai"
    assert default.records[0]["bytes"] != compressai.records[0]["bytes"]
    # the replicate figures are what `rdkit compress` writes: the rate of the model's own padding
    image = np.array(Image.open(images.files[0]).convert("RGB"))
    strings = ours.compress(torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).contiguous())["strings"]
    assert default.records[0]["bytes"] == sum(len(s[0]) for s in strings)


def test_sizes_already_divisible_are_not_padded():
    x = torch.rand(1, 3, 64, 128)
    padded, unpad = pad_for_eval(x, "compressai", 16)
    assert padded is x and unpad(x) is x
    padded, unpad = pad_for_eval(torch.rand(1, 3, 50, 70), "compressai", 128)  # lcm(64, 128) = 128
    assert padded.shape[-2:] == (128, 128) and unpad(padded).shape[-2:] == (50, 70)
    with pytest.raises(RdkitError, match="padding must be one of replicate, compressai"):
        pad_for_eval(x, "zeros", 16)


def test_cli_pad_option_records_the_choice(models, tmp_path):
    theirs, _, weights = models["mbt2018-mean"]
    ckpt = tmp_path / "m.pt"
    import_compressai_checkpoint(ckpt, "mbt2018-mean", weights=weights)
    folder = _folder(tmp_path / "img", LARGE[:1])
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["eval", str(ckpt), "--data", str(folder), "--pad", "compressai", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "padding: compressai" in " ".join(res.output.split())
    entry = json.loads(out.read_text())
    assert entry["padding"] == "compressai"
    ref = _compressai_per_image(theirs, folder)["img0"]
    # rdkit eval codes as .rdk files do, on the portable entropy path: means on a 2**-8 grid, so within a
    # hair of CompressAI's float path (its exact figures are matched on that path above).
    assert entry["results"]["bpp"][0] == pytest.approx(ref["bpp"], rel=5e-3)
    assert entry["results"]["psnr-rgb"][0] == pytest.approx(ref["psnr-rgb"], abs=0.01)
    bad = runner.invoke(app, ["eval", str(ckpt), "--data", str(folder), "--pad", "zeros"])
    assert bad.exit_code == 1 and "padding must be one of replicate, compressai" in bad.output
    assert "Traceback" not in bad.output and np.isfinite(entry["results"]["bpp"][0])
