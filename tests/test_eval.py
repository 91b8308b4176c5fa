"""The evaluator: real bytes, bit-exact check, metrics, CompressAI-readable JSON, CLI."""

import json
import math

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.data.sources import ImageSet, to_tensor
from rdkit_ae.evaluation.evaluator import BitExactError, bytes_per_image, evaluate
from rdkit_ae.evaluation.metrics import psnr_from_mse
from rdkit_ae.evaluation.results import results_curve
from rdkit_ae.model import build_model, build_objective

TINY_FACTORIZED = ["encoder.N=16", "encoder.M=16"]
TINY_CONV = ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4", "quantizer.bits=4"]


@pytest.fixture(scope="module")
def trained_factorized():
    """A factorized model after a few real optimiser steps (MSE + rate, and the aux loss)."""
    torch.manual_seed(0)
    model = build_model("factorized", TINY_FACTORIZED)
    objective = build_objective(model.recipe)
    x = to_tensor(smooth_images(16, seed=1))
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(params, lr=1e-3)
    aux_opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.endswith(".quantiles")], lr=1e-2)
    model.train()
    for _ in range(15):
        opt.zero_grad()
        aux_opt.zero_grad()
        loss, _ = objective(x, model(x))
        loss.backward()
        opt.step()
        model.aux_loss().backward()
        aux_opt.step()
    model.eval()
    model.update(force=True)
    return model


def test_bit_exact_eval_of_a_trained_model(trained_factorized):
    x = smooth_images(10, seed=2)
    res = evaluate(trained_factorized, ImageSet("smooth", x), batch_size=4, name="tiny")
    assert res.meta["bit_exact_checked"] and len(res.records) == 10
    # Bytes are the real strings of the same batch composition.
    for start in (0, 4, 8):
        comp = trained_factorized.compress(to_tensor(x[start : start + 4]).contiguous())
        real = [sum(len(stream[i]) for stream in comp["strings"]) for i in range(len(x[start : start + 4]))]
        assert [r["bytes"] for r in res.records[start : start + 4]] == real
    for r in res.records:
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / 1024)
        assert r["cr"] == pytest.approx(24 / r["bpp"])
        assert r["psnr"] == pytest.approx(psnr_from_mse(r["mse"]))
        assert r["ms_ssim"] is None  # 32x32 is too small for 5 scales
        assert "nominal_bpp" not in r  # entropy-coded
    s = res.summary
    assert s["n_images"] == 10
    assert s["bpp"] == pytest.approx(np.mean([r["bpp"] for r in res.records]))
    assert s["cr"] == pytest.approx(24 / s["bpp"])
    assert s["psnr_of_mean_mse"] == pytest.approx(10 * math.log10(255**2 / np.mean([r["mse"] for r in res.records])))
    assert s["ms_ssim"] is None and s["ms_ssim_images"] == 0
    assert not trained_factorized.training


def test_reconstruction_matches_decoding_one_batch(trained_factorized):
    x = smooth_images(3, seed=3)
    res = evaluate(trained_factorized, ImageSet("s", x), batch_size=8)
    comp = trained_factorized.compress(to_tensor(x).contiguous())
    dec = trained_factorized.decompress(comp["strings"], comp["shape"], comp["size"])["x_hat"]
    u8 = dec.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mse = ((u8.astype(np.float64) - x) ** 2).reshape(3, -1).mean(1)
    assert [r["mse"] for r in res.records] == pytest.approx(list(mse))


def test_fixed_rate_nominal_matches_measured():
    model = build_model("conv-mse", TINY_CONV)  # 4x4x4 latent at 4 bits: 256 bits = 32 bytes
    res = evaluate(model, ImageSet("s", smooth_images(5)), batch_size=2)
    assert {r["bytes"] for r in res.records} == {32}
    assert res.summary["nominal_bpp"] == res.summary["bpp"] == 0.25
    assert res.summary["nominal_cr"] == res.summary["cr"] == 96.0


class _Perturb:
    """Mixin: decompress returns y_hat nudged by one float step, as a buggy decoder might."""

    def decompress(self, strings, shape, **kwargs):
        out = super().decompress(strings, shape, **kwargs)
        y_hat = out["y_hat"].clone()
        y_hat.view(-1)[0] += 1e-3
        return {**out, "y_hat": y_hat}


@pytest.mark.parametrize("recipe,overrides", [("conv-mse", TINY_CONV), ("factorized", TINY_FACTORIZED)])
def test_decoder_mismatch_fails_loudly(recipe, overrides):
    model = build_model(recipe, overrides)
    codec = model.latent_codec
    codec.__class__ = type("Broken" + type(codec).__name__, (_Perturb, type(codec)), {})
    with pytest.raises(BitExactError, match="BIT-EXACT CHECK FAILED.*1 of 3 images.*cannot be trusted"):
        evaluate(model, ImageSet("s", smooth_images(3)), batch_size=3)
    # Without the check the (wrong) numbers come out: the check is what catches it.
    assert len(evaluate(model, ImageSet("s", smooth_images(3)), check_exact=False).records) == 3


def test_mixed_sizes_one_at_a_time_and_ms_ssim(tmp_path):
    from PIL import Image

    sizes = [(176, 192), (192, 176), (40, 24)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(smooth_images(1, h, w, seed=i)[0]).save(tmp_path / f"im{i}.png")
    from rdkit_ae.data.sources import load_images

    images = load_images(tmp_path)
    model = build_model("conv-mse", TINY_CONV)
    res = evaluate(model, images, batch_size=8)
    assert [(r["height"], r["width"]) for r in res.records] == sizes
    # Rate on the unpadded size: 40x24 pads to 40x24 (stride 8), 176x192 needs no padding.
    assert [r["bytes"] for r in res.records] == [math.ceil(4 * (h // 8) * (w // 8) * 4 / 8) for h, w in sizes]
    assert res.records[0]["ms_ssim"] is not None and res.records[2]["ms_ssim"] is None
    assert res.summary["ms_ssim_images"] == 2
    assert res.summary["ms_ssim"] == pytest.approx(np.mean([r["ms_ssim"] for r in res.records[:2]]))


def test_bytes_per_image_sums_every_stream():
    strings = [[b"ab", b"c"], [b"defg", b""]]
    assert bytes_per_image(strings, 2) == [6, 1]
    assert bytes_per_image([[[b"x"], [b"yy"]], [b"zzz"]], 1) == [6]
    from rdkit_ae.errors import RdkitError

    with pytest.raises(RdkitError, match="one bytes object per image"):
        bytes_per_image([[b"a"]], 2)


def test_json_is_readable_by_compressai_plot(tmp_path, trained_factorized):
    from compressai.utils.plot.__main__ import parse_json_file

    a = evaluate(trained_factorized, ImageSet("s", smooth_images(4)), name="tiny")
    b = evaluate(build_model("conv-mse", TINY_CONV), ImageSet("s", smooth_images(4)), name="conv")
    path = tmp_path / "tiny.json"
    a.write_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {"name", "description", "results", "padding"} and data["padding"] == "replicate"
    for key in ("bpp", "psnr-rgb", "ssim-rgb", "cr", "encoding_time", "decoding_time"):
        assert isinstance(data["results"][key], list) and len(data["results"][key]) == 1
    assert "ms-ssim-rgb" not in data["results"]  # not measurable at 32x32: left out, not null
    parsed = parse_json_file(path, "psnr")
    assert parsed["name"] == "tiny" and parsed["xs"] == [pytest.approx(a.summary["bpp"])]
    assert parsed["ys"] == [pytest.approx(a.summary["psnr"])]
    curve = results_curve([a, b], name="both")
    path.write_text(json.dumps(curve))
    assert parse_json_file(path, "psnr")["xs"] == [pytest.approx(a.summary["bpp"]), pytest.approx(b.summary["bpp"])]


def test_write_csv(tmp_path):
    res = evaluate(build_model("conv-mse", TINY_CONV), ImageSet("s", smooth_images(3)))
    res.write_csv(tmp_path / "p.csv")
    import csv

    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 3 and rows[0]["name"] == "s[0]" and float(rows[0]["bpp"]) == 0.25
    assert rows[0]["ms_ssim"] == ""


def test_cli_eval(tmp_path, trained_factorized):
    from rdkit_ae.cli import app

    np.savez(tmp_path / "d.npz", x=smooth_images(6, seed=5))
    save_checkpoint(tmp_path / "f.pt", trained_factorized, trained_factorized.recipe)
    conv = build_model("conv-mse", TINY_CONV)
    save_checkpoint(tmp_path / "c.pt", conv, conv.recipe)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "eval",
            str(tmp_path / "f.pt"),
            str(tmp_path / "c.pt"),
            "--data",
            str(tmp_path / "d.npz"),
            "--limit",
            "5",
            "--out",
            str(tmp_path / "r.json"),
            "--csv",
            str(tmp_path / "r.csv"),
            "--name",
            "mine",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "bit-exact" in result.output and "nominal CR 96.000" in result.output and "measured CR 96.000" in result.output
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["name"] == "mine" and len(data["results"]["bpp"]) == 2 and data["results"]["bpp"][1] == 0.25
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 5 and lines[0].startswith("checkpoint,name,")

    bad = runner.invoke(app, ["eval", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "d.npz")])
    assert bad.exit_code == 1 and bad.output.strip().startswith("error: checkpoint not found")


def test_container_bytes_are_real_rdk_files(trained_factorized):
    from rdkit_ae import codec

    x = smooth_images(4, seed=7)
    res = evaluate(trained_factorized, ImageSet("s", x), batch_size=4)
    for img, rec in zip(x, res.records):
        rdk = codec.compress_array(trained_factorized, img)  # what `rdkit compress` writes
        assert rec["container_bytes"] == len(rdk) and rec["container_bytes"] > rec["bytes"]
        assert rec["container_bpp"] == pytest.approx(8 * len(rdk) / 1024)
    assert res.summary["container_cr"] == pytest.approx(24 / res.summary["container_bpp"])
    assert res.to_compressai()["results"]["container-bpp"] == [pytest.approx(res.summary["container_bpp"])]
    no_container = evaluate(trained_factorized, ImageSet("s", x), container=False)
    assert "container_bytes" not in no_container.records[0]
