"""Perceptual metrics (rdkit_ae.evaluation.perceptual, learned_metrics): values against piq and lpips, the
eval CLI's --metrics, the results JSON for compressai.utils.plot, and LPIPS's backbone loading (no download)."""

from __future__ import annotations

import csv
import json

import numpy as np
import piq
import pytest
import torch
from synthetic import smooth_images
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.data.sources import ImageSet, to_tensor, to_uint8
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation import learned_metrics
from rdkit_ae.evaluation.evaluator import evaluate
from rdkit_ae.evaluation.metrics import quality
from rdkit_ae.evaluation.perceptual import METRICS, metric_for, parse_metrics
from rdkit_ae.evaluation.results import COMPRESSAI_KEYS, PERCEPTUAL_KEYS
from rdkit_ae.model import build_model

TINY_CONV = ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4", "quantizer.bits=4"]


def _noisy(images: np.ndarray, seed: int = 0, amount: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(int) + rng.integers(-amount, amount + 1, images.shape), 0, 255).astype(np.uint8)


def _piq(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def t(v):
        return torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255.0

    return fn(t(a), t(b), data_range=1.0, reduction="none").numpy()


def test_parse_metrics_names_and_errors():
    assert parse_metrics("psnr,ms-ssim,haarpsi, MS_GMSD") == ("haarpsi", "ms-gmsd")
    assert parse_metrics(["vsi", "mdsi,vsi"]) == ("vsi", "mdsi")
    assert parse_metrics(None) == ()
    with pytest.raises(RdkitError, match="unknown metric.*nope.*known: psnr"):
        parse_metrics("haarpsi,nope")
    assert metric_for("ms-gmsd-rgb").key == "ms_gmsd" and not metric_for("ms_gmsd").higher_is_better
    # the summary keys, the results JSON keys and the metric table agree
    assert {m.key for m in METRICS.values() if m.name not in ("psnr", "ssim", "ms-ssim")} == set(PERCEPTUAL_KEYS)
    ours = dict(COMPRESSAI_KEYS)
    assert all(ours[m.compressai] == m.key for m in METRICS.values())


@pytest.mark.parametrize(
    "name, fn", [("haarpsi", piq.haarpsi), ("ms-gmsd", piq.multi_scale_gmsd), ("vsi", piq.vsi), ("mdsi", piq.mdsi)]
)
def test_weight_free_values_equal_piq_per_image(name, fn):
    a = smooth_images(3, seed=2)
    b = _noisy(a)
    rows = quality(a, b, [name])
    key = METRICS[name].key
    np.testing.assert_allclose([r[key] for r in rows], _piq(fn, a, b), rtol=1e-6, atol=1e-7)
    same = quality(a, a, [name])
    perfect = 1.0 if METRICS[name].higher_is_better else 0.0
    assert all(r[key] == pytest.approx(perfect, abs=1e-4) for r in same)
    worse = quality(a, _noisy(a, amount=80), [name])
    sign = 1 if METRICS[name].higher_is_better else -1
    assert all(sign * (w[key] - r[key]) < 0 for w, r in zip(worse, rows))  # more noise scores worse


def test_small_images_give_none_not_an_error():
    a = smooth_images(2, 12, 12, seed=1)
    rows = quality(a, _noisy(a), ["haarpsi", "ms-gmsd", "lpips"])  # lpips: below 32, so no weights needed
    assert all(r["haarpsi"] is None and r["ms_gmsd"] is None and r["lpips"] is None for r in rows)


def test_cli_eval_metrics_mean_equals_piq_on_the_decoded_images(tmp_path):
    from compressai.utils.plot.__main__ import parse_json_file

    from rdkit_ae.cli import app

    torch.manual_seed(0)
    model = build_model("conv-mse", TINY_CONV).eval()
    images = smooth_images(5, seed=7)
    np.savez(tmp_path / "d.npz", x=images)
    save_checkpoint(tmp_path / "c.pt", model, model.recipe)
    args = ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "psnr,haarpsi,ms-gmsd"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert "perceptual: haarpsi 0." in result.output and "ms-gmsd 0." in result.output
    with torch.no_grad():
        c = model.compress(to_tensor(images).contiguous())
        decoded = to_uint8(model.decompress(c["strings"], c["shape"])["x_hat"])
    data = json.loads((tmp_path / "r.json").read_text())["results"]
    assert abs(data["haarpsi-rgb"][0] - float(_piq(piq.haarpsi, images, decoded).mean())) < 1e-3
    assert abs(data["ms-gmsd-rgb"][0] - float(_piq(piq.multi_scale_gmsd, images, decoded).mean())) < 1e-3
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 5 and all(0 < float(r["haarpsi"]) <= 1 and float(r["ms_gmsd"]) >= 0 for r in rows)
    np.testing.assert_allclose([float(r["haarpsi"]) for r in rows], _piq(piq.haarpsi, images, decoded), rtol=1e-6)
    for key in ("haarpsi-rgb", "ms-gmsd-rgb"):  # python -m compressai.utils.plot -m haarpsi-rgb
        parsed = parse_json_file(tmp_path / "r.json", key)
        assert parsed["ys"] == [pytest.approx(data[key][0])]

    bad = CliRunner().invoke(app, [*args[:4], "--metrics", "haarpsi,sharpness"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "unknown metric(s) sharpness" in bad.output


def test_evaluate_api_means_and_meta():
    res = evaluate(build_model("conv-mse", TINY_CONV), ImageSet("s", smooth_images(3)), metrics=("vsi", "mdsi"))
    assert res.meta["metrics"] == ["vsi", "mdsi"]
    assert res.summary["vsi"] == pytest.approx(np.mean([r["vsi"] for r in res.records]))
    assert res.summary["mdsi_images"] == 3 and "haarpsi" not in res.summary
    assert {"vsi-rgb", "mdsi-rgb"} <= set(res.to_compressai()["results"])
    plain = evaluate(build_model("conv-mse", TINY_CONV), ImageSet("s", smooth_images(2)))
    assert "vsi" not in plain.records[0] and "vsi-rgb" not in plain.to_compressai()["results"]


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """No backbone anywhere: an empty hub folder, no RDKIT_LPIPS_BACKBONE, nothing cached."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(learned_metrics.ENV, raising=False)
    monkeypatch.setattr(learned_metrics, "_CACHE", {})
    return tmp_path / "hub" / "checkpoints"


def test_lpips_without_weights_is_one_line(no_hub, tmp_path):
    from rdkit_ae.cli import app

    with pytest.raises(learned_metrics.MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        learned_metrics.load_lpips()
    np.savez(tmp_path / "d.npz", x=smooth_images(2))
    model = build_model("conv-mse", TINY_CONV)
    save_checkpoint(tmp_path / "c.pt", model, model.recipe)
    result = CliRunner().invoke(
        app, ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "lpips"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "LPIPS needs torchvision's ImageNet AlexNet" in result.output and "--lpips-weights" in result.output
    missing = CliRunner().invoke(
        app, ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "lpips",
              "--lpips-weights", str(tmp_path / "none.pth")],
    )  # fmt: skip
    assert missing.exit_code == 1 and "LPIPS backbone weights not found" in missing.output


def _lpips_reference(state: dict, net: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The lpips package's own network with the same backbone loaded by hand, as the reference."""
    import lpips

    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    for slice_ in (m for n, m in ref.net.named_children() if n.startswith("slice")):
        for idx, layer in slice_.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.data.copy_(state[f"features.{idx}.weight"])
                layer.bias.data.copy_(state[f"features.{idx}.bias"])

    def t(v):
        return torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255.0

    with torch.no_grad():
        return ref(t(a), t(b), normalize=True).reshape(-1).numpy()


def test_lpips_from_hub_cache_and_env_file(no_hub, tmp_path, monkeypatch):
    from plugin_helpers import random_vgg_state
    from torchvision.models import alexnet

    torch.manual_seed(3)
    alex = alexnet().state_dict()
    no_hub.mkdir(parents=True)
    torch.save(alex, no_hub / learned_metrics.HUB_FILES["alex"])  # where torchvision would cache it
    a = smooth_images(2, seed=4)
    b = _noisy(a, seed=1)
    got = quality(a, b, ["lpips"])
    np.testing.assert_allclose([r["lpips"] for r in got], _lpips_reference(alex, "alex", a, b), rtol=1e-5)
    assert quality(a, a, ["lpips"])[0]["lpips"] == pytest.approx(0.0, abs=1e-6)

    vgg = random_vgg_state(depth=29, seed=5)  # features[:30]: all VGG-16 convolutions
    torch.save(vgg, tmp_path / "vgg.pth")
    monkeypatch.setenv(learned_metrics.ENV, str(tmp_path / "vgg.pth"))
    got = quality(a, b, ["lpips"])
    np.testing.assert_allclose([r["lpips"] for r in got], _lpips_reference(vgg, "vgg", a, b), rtol=1e-5)

    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "short.pth")
    with pytest.raises(RdkitError, match="features.0 missing or of the wrong shape for LPIPS-vgg"):
        learned_metrics.load_lpips(tmp_path / "short.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RdkitError, match="cannot read LPIPS backbone weights"):
        learned_metrics.load_lpips(tmp_path / "junk.pth")


def test_cli_eval_lpips_with_a_weights_file(no_hub, tmp_path):
    import os

    from torchvision.models import alexnet

    from rdkit_ae.cli import app

    torch.manual_seed(6)
    alex = alexnet().state_dict()
    torch.save(alex, tmp_path / "alex.pth")
    model = build_model("conv-mse", TINY_CONV).eval()
    images = smooth_images(3, seed=9)
    np.savez(tmp_path / "d.npz", x=images)
    save_checkpoint(tmp_path / "c.pt", model, model.recipe)
    result = CliRunner().invoke(
        app,
        ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "lpips",
         "--lpips-weights", str(tmp_path / "alex.pth"), "--out", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert learned_metrics.ENV not in os.environ  # the option holds for that command only
    with torch.no_grad():
        c = model.compress(to_tensor(images).contiguous())
        decoded = to_uint8(model.decompress(c["strings"], c["shape"])["x_hat"])
    mean = json.loads((tmp_path / "r.json").read_text())["results"]["lpips-rgb"][0]
    assert mean == pytest.approx(float(_lpips_reference(alex, "alex", images, decoded).mean()), abs=1e-5)
