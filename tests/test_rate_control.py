"""Rate control (issue 19, item 1): compress a variable-rate model's images to a size, bpp, CR or PSNR."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import smooth_images
from test_variable_rate import tiny_model
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.codec import Codec, rate_control
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.metrics import psnr
from rdkit_ae.model import build_model


def _photo(h: int = 96, w: int = 128, seed: int = 5) -> np.ndarray:
    """Smooth structure plus texture and edges, like a photograph's mix."""
    rng = np.random.default_rng(seed)
    base = smooth_images(1, h, w, seed=seed)[0].astype(np.float32)
    base[:, w // 2 :] += rng.normal(0, 12, (h, w - w // 2, 3))  # a textured half
    base[h // 3 : h // 2] = 230.0  # a bright band with hard edges
    return np.clip(base, 0, 255).astype(np.uint8)


PHOTO = _photo()
SMALL = smooth_images(1, 32, 32, seed=7)[0]


@pytest.fixture(scope="module")
def vr_checkpoint(tmp_path_factory):
    model = tiny_model()
    model.eval().update(force=True)
    path = tmp_path_factory.mktemp("rc") / "vr.pt"
    save_checkpoint(path, model, model.recipe)
    return path


@pytest.fixture(scope="module")
def codec(vr_checkpoint):
    return Codec.load(vr_checkpoint)


def _ends(codec, image) -> tuple[int, int]:
    sizes = []
    for t in (0, 5):
        codec.set_rate(rate=t)
        sizes.append(len(codec.compress(image)))
    codec.set_rate(rate=2.5)
    return sizes[0], sizes[1]


@pytest.mark.parametrize("image", [PHOTO, SMALL], ids=["photo", "32x32"])
def test_max_bytes_is_never_exceeded_and_lands_within_3_percent(codec, image):
    low, high = _ends(codec, image)
    assert high > 1.2 * low  # the model's range is wide enough to test in
    for frac in (0.15, 0.4, 0.7):
        n = int(low + frac * (high - low))
        data, report = codec.compress_to(image, max_bytes=n)
        assert len(data) == report.nbytes <= n
        assert len(data) >= 0.97 * n, (n, [p.nbytes for p in report.passes])
        assert len(report.passes) <= 12 and codec.rate == 2.5  # bounded; the codec's own point is kept
        assert f"--max-bytes {n}: {len(data):,} bytes" in report.achieved


def test_the_file_stores_its_rate_and_decodes_at_it(codec, vr_checkpoint):
    low, high = _ends(codec, PHOTO)
    data, report = codec.compress_to(PHOTO, bpp=(low + high) / 2 * 8 / PHOTO[..., 0].size)
    fresh = Codec.load(vr_checkpoint)  # at its default: never told the rate
    decoded = fresh.decompress(data)
    codec.set_rate(rate=report.rate)
    assert np.array_equal(decoded, codec.reconstruct(PHOTO))
    codec.set_rate(rate=2.5)


@pytest.mark.parametrize("kind", ["bpp", "cr"])
def test_bpp_and_cr_land_within_2_percent(codec, kind):
    low, high = _ends(codec, SMALL)
    pixels = 32 * 32
    for frac in (0.3, 0.6):
        bpp = (low + frac * (high - low)) * 8 / pixels
        value = bpp if kind == "bpp" else 24 / bpp
        data, report = codec.compress_to(SMALL, **{kind: value})
        got = len(data) * 8 / pixels
        assert abs(got - bpp) <= 0.02 * bpp, (bpp, got)
        assert report.bpp == got


def test_psnr_target_gives_the_smallest_file_reaching_it(codec):
    codec.set_rate(rate=0)
    low = psnr(PHOTO[None], codec.decompress(codec.compress(PHOTO))[None])[0]
    codec.set_rate(rate=5)
    high = psnr(PHOTO[None], codec.decompress(codec.compress(PHOTO))[None])[0]
    codec.set_rate(rate=2.5)
    goal = (low + high) / 2
    data, report = codec.compress_to(PHOTO, psnr=goal)
    achieved = psnr(PHOTO[None], codec.decompress(data)[None])[0]
    assert achieved == pytest.approx(report.psnr) and achieved >= goal
    assert achieved - goal < 0.5 or len(report.passes) == 12
    # every pass smaller than the chosen one missed the target
    assert all(p.psnr < goal for p in report.passes if p.nbytes < report.nbytes)


def test_unreachable_targets_name_the_nearest_value(codec):
    low, high = _ends(codec, SMALL)
    with pytest.raises(RdkitError, match=rf"^--max-bytes 10: the smallest file .* is {low:,} bytes \(rate 0\)$"):
        codec.compress_to(SMALL, max_bytes=10)
    with pytest.raises(RdkitError, match=r"^--bpp 50: the highest bpp this model reaches on this image is [\d.]+ "):
        codec.compress_to(SMALL, bpp=50)
    with pytest.raises(RdkitError, match=r"^--psnr 90: the highest PSNR .* dB \(rate 5\)$"):
        codec.compress_to(SMALL, psnr=90)
    data, report = codec.compress_to(SMALL, max_bytes=10 * high)  # a ceiling above the largest file: the top rate
    assert report.rate == 5 and len(data) == high
    for bad in ({"bpp": 1, "cr": 12}, {}, {"bpp": -1}, {"max_bytes": 10.5}):
        with pytest.raises(RdkitError):
            codec.compress_to(SMALL, **bad)


# -- the CLI ----------------------------------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _png(folder, name, image):
    path = folder / name
    Image.fromarray(image).save(path)
    return path


def test_cli_max_bytes_reports_and_decodes_with_plain_decompress(vr_checkpoint, codec, tmp_path):
    src = _png(tmp_path, "photo.png", PHOTO)
    low, high = _ends(codec, PHOTO)
    n = (low + high) // 2
    res = _cli("compress", src, "-m", vr_checkpoint, "--max-bytes", n)
    assert res.exit_code == 0, res.output
    size = (tmp_path / "photo.rdk").stat().st_size
    assert 0.97 * n <= size <= n
    assert f"--max-bytes {n}: {size:,} bytes (rate " in res.output and "passes)" in res.output
    res = _cli("decompress", tmp_path / "photo.rdk", "-m", vr_checkpoint)
    assert res.exit_code == 0, res.output
    decoded = np.asarray(Image.open(tmp_path / "photo.decoded.png"))
    assert np.array_equal(decoded, codec.decompress((tmp_path / "photo.rdk").read_bytes()))


def test_cli_cr_over_several_files_prints_a_table_with_rates(vr_checkpoint, codec, tmp_path):
    images = smooth_images(3, 32, 32, seed=11)
    srcs = [_png(tmp_path, f"c{i}.png", im) for i, im in enumerate(images)]
    lows, highs = zip(*(_ends(codec, im) for im in images))
    bpp = (max(lows) + min(highs)) / 2 * 8 / 1024
    res = _cli("compress", *srcs, "-m", vr_checkpoint, "--cr", 24 / bpp, "--out-dir", tmp_path / "out")
    assert res.exit_code == 0, res.output
    for src in srcs:
        got = (tmp_path / "out" / src.with_suffix(".rdk").name).stat().st_size * 8 / 1024
        assert abs(got - bpp) <= 0.02 * bpp


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-bytes", 10], "--max-bytes 10: the smallest file this model makes of"),
        (["--psnr", 99], "--psnr 99: the highest PSNR this model reaches on"),
        (["--cr", 2000], "--cr 2000: the highest CR this model reaches on"),
        (["--bpp", 1, "--rate", 2], "use either --bpp or --rate, not both"),
        (["--bpp", 1, "--cr", 12], "give one target, not --bpp and --cr"),
        (["--bpp", 0], "--bpp 0: the target must be a positive finite number"),
        (["--bpp", 1, "--passes", 1], "--passes must be in 2..64"),
        (["--passes", 4], "--passes needs a target"),
    ],
)
def test_cli_bad_or_unreachable_targets_fail_in_one_line(vr_checkpoint, tmp_path, args, message):
    src = _png(tmp_path, "a.png", SMALL)
    res = _cli("compress", src, "-m", vr_checkpoint, *args)
    assert res.exit_code == 1 and message in res.output, res.output
    assert res.output.strip().count("\n") == 0 and "Traceback" not in res.output
    assert not (tmp_path / "a.rdk").exists()


def test_cli_fixed_rate_model_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    model = build_model("factorized", ["encoder.N=8", "encoder.M=8"])
    model.eval().update(force=True)
    ckpt = tmp_path / "fixed.pt"
    save_checkpoint(ckpt, model, model.recipe)  # type: ignore[arg-type]
    src = _png(tmp_path, "a.png", SMALL)
    res = _cli("compress", src, "-m", ckpt, "--max-bytes", 300)
    assert res.exit_code == 1 and f"--max-bytes needs a variable-rate model, but {ckpt} has a single rate" in res.output
    assert res.output.strip().count("\n") == 0


# -- rdkit eval --bpp / --cr ------------------------------------------------------------------------
def test_cli_eval_at_bpp_codes_every_image_at_the_target(vr_checkpoint, codec, tmp_path):
    import json

    images = smooth_images(3, 32, 32, seed=11)
    np.savez(tmp_path / "d.npz", x=images)
    lows, highs = zip(*(_ends(codec, im) for im in images))
    bpp = round((max(lows) + min(highs)) / 2 * 8 / 1024, 3)  # whole files; the targets are the streams' bpp
    res = _cli("eval", vr_checkpoint, "--data", tmp_path / "d.npz", "--bpp", bpp, "--cr", 24 / bpp, "-o",
               tmp_path / "r.json", "--csv", tmp_path / "r.csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"rate control: every image at {bpp:g} bpp" in res.output
    curve = json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(curve["bpp"]) == 2
    for got in curve["bpp"]:
        assert abs(got - bpp) <= 0.02 * bpp
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(images) and "passes" in rows[0]
    # every image lands at the target, not only the mean
    assert all(abs(float(v) - bpp) <= 0.02 * bpp for v in _column(rows, "bpp"))


def _column(rows: list[str], name: str) -> list[str]:
    header = rows[0].split(",")
    return [row.split(",")[header.index(name)] for row in rows[1:]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bpp", 1, "--rate", 2], "use --bpp/--cr or --lambda/--rate, not both"),
        (["--cr", 0], "--bpp and --cr must be positive"),
        (["--bpp", "x"], "--bpp: 'x' is not a number"),
    ],
)
def test_cli_eval_bad_targets_fail_in_one_line(vr_checkpoint, tmp_path, args, message):
    np.savez(tmp_path / "d.npz", x=smooth_images(2, 32, 32, seed=3))
    res = _cli("eval", vr_checkpoint, "--data", tmp_path / "d.npz", *args)
    assert res.exit_code == 1 and message in res.output, res.output
    assert res.output.strip().count("\n") == 0


def test_cli_eval_at_bpp_refuses_a_fixed_rate_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("factorized", ["encoder.N=8", "encoder.M=8"])
    model.eval().update(force=True)
    ckpt = tmp_path / "fixed.pt"
    save_checkpoint(ckpt, model, model.recipe)  # type: ignore[arg-type]
    np.savez(tmp_path / "d.npz", x=smooth_images(2, 32, 32, seed=3))
    res = _cli("eval", ckpt, "--data", tmp_path / "d.npz", "--cr", 12)
    assert res.exit_code == 1 and f"--bpp/--cr need a variable-rate model, but {ckpt} has a single rate" in res.output


# -- the search on a size curve no small model gives on demand ---------------------------------------
class _SizeCurve:
    """A variable-rate codec stand-in whose file at rate ``t`` has ``size(t)`` bytes: the search sees only
    sizes, and a real model's plateaus cannot be placed where a test needs them."""

    def __init__(self, size):
        self.size, self.t, self.source = size, 0.0, "curve"
        lambdas = SimpleNamespace(lambdas=[1.0] * 7)
        self.model = SimpleNamespace(variable_rate=True, rate=3.0, set_rate=lambda index: None, latent_codec=lambdas)

    def set_rate(self, rate):
        self.t = float(np.float32(rate))
        return self.t

    def compress(self, image):
        return bytes(self.size(self.t))


def _plateau_then_ramp(t: float) -> int:
    """Sizes in 4-byte words: growing to 189 bytes at t=1, flat there to t=1.3, then 4 bytes every 0.01."""
    if t < 1.0:
        return 4 * int(120 * np.exp(0.45 * t) // 4) + 1
    if t < 1.3:
        return 189
    return 189 + 4 * int((t - 1.3) / 0.01) + 4 * int(120 * (np.exp(0.45 * (t - 1.3)) - 1) // 4)


def test_a_plateau_below_the_ceiling_is_halved_not_crept_along():
    codec = _SizeCurve(_plateau_then_ramp)
    data, report = rate_control.compress_to(codec, SMALL, rate_control.Target("max_bytes", 200))
    assert 0.97 * 200 <= len(data) <= 200, [(p.rate, p.nbytes) for p in report.passes]
    assert len(report.passes) <= rate_control.DEFAULT_PASSES
