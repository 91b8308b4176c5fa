"""rdkit compare (rdkit_ae.evaluation.compare, compare_figure, crops): the grid's tiles are the decoded pixels of
real files, its numbers are those files' bytes and metrics, WebP lands at the largest file not above the
target, crops, and one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from synthetic import smooth_images
from test_rate_control import _photo
from test_variable_rate import tiny_model
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.codec import Codec
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation import classic
from rdkit_ae.evaluation.compare import classical_at
from rdkit_ae.evaluation.compare_figure import enlarge, zoom
from rdkit_ae.evaluation.crops import check_box, crop, detail_box, parse_box
from rdkit_ae.evaluation.metrics import quality
from rdkit_ae.model import build_model

TINY_CONV = ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4", "quantizer.bits=4"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two images (32x32 and 48x64 PNGs), a variable-rate and a fixed-rate checkpoint."""
    root = tmp_path_factory.mktemp("compare")
    Image.fromarray(smooth_images(1, 32, 32, seed=7)[0]).save(root / "small.png")
    Image.fromarray(_photo(48, 64)).save(root / "photo.png")
    vr = tiny_model()
    vr.eval().update(force=True)
    save_checkpoint(root / "vr.pt", vr, vr.recipe)
    fixed = build_model("conv-mse", TINY_CONV).eval()
    save_checkpoint(root / "fixed.pt", fixed, fixed.recipe)
    return root


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def _target_bpp(checkpoint, image) -> float:
    """Halfway between the tiny model's lowest and highest bpp on ``image`` (a random model codes large files)."""
    codec = Codec.load(checkpoint)
    sizes = []
    for t in (0, 5):
        codec.set_rate(rate=t)
        sizes.append(len(codec.compress(image)))
    return (sizes[0] + sizes[1]) / 2 * 8 / image[..., 0].size


def test_grid_tiles_are_the_decoded_files_and_numbers_match(inputs, tmp_path):
    small, photo = _png(inputs / "small.png"), _png(inputs / "photo.png")
    bpp = round(_target_bpp(inputs / "vr.pt", small), 2)
    out = tmp_path / "grid.png"
    args = ["compare", str(inputs / "small.png"), str(inputs / "photo.png"), "-m", str(inputs / "vr.pt"),
            "-m", str(inputs / "fixed.pt"), "--bpp", str(bpp), "--codecs", "webp,jpeg", "--crop", "24",
            "--metrics", "psnr,ssim,haarpsi", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["target"] == {"kind": "bpp", "value": bpp, "bpp": bpp} and doc["metrics"] == ["psnr", "ssim", "haarpsi"]
    rows = doc["images"]
    assert [r["name"] for r in rows] == ["small.png", "photo.png"]
    assert [[t["codec"] for t in r["tiles"]] for r in rows] == [["original", "WebP", "JPEG", "recipe", "conv-mse"]] * 2
    grid = _png(out)
    vr_codec, fixed_codec = Codec.load(inputs / "vr.pt"), Codec.load(inputs / "fixed.pt")
    for i, (image, row) in enumerate(zip((small, photo), rows)):
        h, w = image.shape[:2]
        box = tuple(row["crop_box"])
        assert box == detail_box(image, 24) and box[2:] == (24, 24)
        tiles = {t["codec"]: t for t in row["tiles"]}
        for t in row["tiles"]:
            assert t["bpp"] == pytest.approx(t["bytes"] * 8 / (h * w)) and t["cr"] == pytest.approx(24 / t["bpp"])
        # the classical files, made again at the chosen quality: same bytes, never above the target
        decoded = {"original": image}
        for label, name in (("WebP", "webp"), ("JPEG", "jpeg")):
            q = int(tiles[label]["setting"].split()[1])
            data = classic.encode(image, name, q)
            assert len(data) == tiles[label]["bytes"] and tiles[label]["bpp"] <= bpp
            decoded[label] = np.array(classic.decode(data))
        # the variable-rate model through rate control, the fixed-rate one as it is: real files, decoded
        data, report = vr_codec.compress_to(image, bpp=bpp)
        assert len(data) == tiles["recipe"]["bytes"] and tiles["recipe"]["setting"] == f"rate {report.rate:.4g}"
        assert abs(tiles["recipe"]["bpp"] - bpp) <= 0.02 * bpp
        decoded["recipe"] = vr_codec.decompress(data)
        data = fixed_codec.compress(image)
        assert len(data) == tiles["conv-mse"]["bytes"] and tiles["conv-mse"]["setting"] == "fixed rate"
        decoded["conv-mse"] = fixed_codec.decompress(data)
        # each tile of the PNG is exactly the crop of that decoded image, enlarged with nearest-neighbour
        k = zoom(24, 24)
        for j, label in enumerate(["original", "WebP", "JPEG", "recipe", "conv-mse"]):
            x, y = _origin(rows, i, j, k, len(doc["metrics"]))
            assert np.array_equal(grid[y : y + 24 * k, x : x + 24 * k], enlarge(crop(decoded[label], box), k)), label
            if label != "original":
                scores = quality(image[None], decoded[label][None], ["haarpsi"])[0]
                assert tiles[label]["psnr"] == pytest.approx(scores["psnr"])
                assert tiles[label]["haarpsi"] == pytest.approx(scores["haarpsi"], rel=1e-6)
    assert grid.shape[1] == 10 + 5 * (max(184, 24 * zoom(24, 24)) + 10)  # five columns
    table = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(table) == 10 and table[3]["codec"] == "recipe" and int(table[3]["bytes"]) == rows[0]["tiles"][3]["bytes"]
    again = CliRunner().invoke(app, args)  # never overwritten without --force
    assert again.exit_code == 1 and "already exists; pass --force" in again.output and again.output.count("\n") == 1


def _origin(rows, i, j, k, n_metrics):
    """Where tile (i, j) starts in the PNG, from the layout's rules (title, padding, label lines)."""
    from rdkit_ae.evaluation import compare_figure as f

    cell = max(f.MIN_CELL, 24 * k)
    label_h = f.LINE * (3 + n_metrics) + 4
    return f.PAD + j * (cell + f.PAD), f.TITLE + i * (24 * k + label_h + f.PAD)


def test_classical_is_the_largest_file_not_above_the_target():
    image = _photo(48, 64)
    for goal in (150, 400, 900):
        data, q = classical_at(image, "webp", goal, "photo")
        assert len(data) <= goal and len(data) == len(classic.encode(image, "webp", q))
        assert q == 100 or len(classic.encode(image, "webp", q + 1)) > goal
    with pytest.raises(RdkitError, match=r"WebP cannot reach --bpp 0.1 on photo: its smallest file is 0\.\d+ bpp"):
        classical_at(image, "webp", 0.1 * 48 * 64 / 8, "photo", "--bpp 0.1")


def test_crops():
    image = np.full((60, 80, 3), 128, np.uint8)
    image[30:50, 50:70] = np.random.default_rng(0).integers(0, 255, (20, 20, 3))  # the only detail
    x, y, w, h = detail_box(image, 16)
    assert (w, h) == (16, 16) and 50 <= x <= 54 and 30 <= y <= 34
    assert detail_box(image, 500) == (0, 0, 80, 60)  # larger than the image: all of it
    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "-1,0,4,4", "0,0,0,4"):
        with pytest.raises(RdkitError, match="--crop-box"):
            parse_box(bad)
    with pytest.raises(RdkitError, match=r"--crop-box 70,0,16,16 does not fit x.png \(80x60 pixels\)"):
        check_box((70, 0, 16, 16), 60, 80, "x.png")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--crop-box", "0,0,40,40", "--bpp", "2"], "--crop-box 0,0,40,40 does not fit small.png (32x32 pixels)"),
        (["--crop-box", "1,2", "--bpp", "2"], "--crop-box: give x,y,w,h as four whole numbers"),
        (["--bpp", "0.1"], "WebP cannot reach --bpp 0.1 on small.png: its smallest file is 0.5"),
        (["-m", "vr.pt", "--cr", "12"], "recipe (VR): --cr 12: the highest CR this model reaches on small.png is"),
        (["-m", "none.pt", "--bpp", "2"], "checkpoint not found: "),
        (["--bpp", "2", "--cr", "12"], "give exactly one rate-control target"),
        (["--bpp", "2", "--codecs", "webp,gif"], "unknown classical codec 'gif'"),
        (["--bpp", "2", "--metrics", "psnr,sharpness"], "unknown metric 'sharpness'"),
    ],
)
def test_errors_are_one_line(inputs, tmp_path, extra, message):
    extra = [str(inputs / e) if e.endswith(".pt") else e for e in extra]
    result = CliRunner().invoke(app, ["compare", str(inputs / "small.png"), *extra, "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert message.replace("(VR)", f"({inputs / 'vr.pt'})") in result.output
    assert not (tmp_path / "g.png").exists()


def test_inputs_and_outputs_are_refused_in_one_line(inputs, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    cases = [
        (["compare", str(tmp_path / "junk.png"), "--bpp", "2", "-o", str(tmp_path / "g.png")], "junk.png"),
        (["compare", str(inputs / "small.png"), "--bpp", "2", "-o", str(inputs / "small.png")],
         "refusing to overwrite the input"),
        (["compare", str(inputs / "small.png"), "--bpp", "2", "-o", str(tmp_path / "g.jpg")], "give a .png path"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
