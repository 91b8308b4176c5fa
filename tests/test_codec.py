"""The codec API: bit-exact round trips for every zoo recipe, model ids, unsafe checkpoints and latents."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import test_codec_support as support
import torch
from test_codec_support import ZOO, make_checkpoint, reference, smooth_image

from rdkit_ae.checkpoint import load_model
from rdkit_ae.codec import (
    Codec,
    ModelMismatchError,
    compress_array,
    compress_file,
    container,
    decompress_bytes,
    decompress_file,
    fixed_threads,
    latent_layout,
    model_id,
)
from rdkit_ae.errors import CheckpointError, DataError, FormatError, RdkitError

# Shared session fixtures (pytest finds them as attributes of this module).
zoo_checkpoints = support.zoo_checkpoints
tiny_checkpoints = support.tiny_checkpoints

KODAK = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[2] / "shared/data/kodak/kodim01.png",
            Path("/work/shared/data/kodak/kodim01.png"),
        )
        if p.is_file()
    ),
    None,
)


@pytest.fixture(scope="module")
def codecs(zoo_checkpoints):
    return {name: Codec.load(path) for name, path in zoo_checkpoints.items()}


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("size", [(32, 32), (512, 768)], ids=["cifar", "kodak"])
def test_round_trip_equals_evaluator_reconstruction(codecs, name, size):
    codec = codecs[name]
    image = smooth_image(*size, seed=ZOO.index(name))
    data = codec.compress(image)
    decoded = codec.decompress(data)
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    assert np.array_equal(decoded, reference(codec.model, image))
    # The container adds only its header to the quantizer's own strings.
    with fixed_threads():
        raw = codec.model.compress(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255).contiguous())
    strings = sum(len(s[0]) for s in raw["strings"])
    header = container.header_size(data)
    assert len(data) == strings + header
    if size == (32, 32):
        assert header <= 16, f"{name}: {header} bytes of container overhead at 32x32"
    # Same image, same bytes, every time.
    assert codec.compress(image) == data


@pytest.mark.parametrize("name", ["conv-mse", "hyperprior"])
@pytest.mark.parametrize("size", [(1, 1), (17, 45), (33, 8), (250, 3)])
def test_any_size_round_trips(codecs, name, size):
    codec = codecs[name]
    image = smooth_image(*size, seed=3)
    decoded = codec.decompress(codec.compress(image))
    assert np.array_equal(decoded, reference(codec.model, image))


def test_header_sizes_measured(codecs):
    """The overhead beyond the strings for each zoo recipe (reported in docs/format.md)."""
    measured = {}
    for name in ZOO:
        for size in [(32, 32), (512, 768)]:
            measured[name, size] = container.header_size(codecs[name].compress(smooth_image(*size)))
    assert all(measured[n, (32, 32)] == 14 for n in ("conv-mse", "conv-hybrid", "conv-ste", "factorized"))
    # Two streams: one more varint for the first stream's length (1 or 2 bytes).
    assert measured["hyperprior", (32, 32)] in (15, 16)
    assert all(v <= 19 for v in measured.values())
    print("container overhead:", {f"{n} {h}x{w}": v for (n, (h, w)), v in measured.items()})


@pytest.mark.skipif(KODAK is None, reason="../shared/data/kodak is not on this machine")
def test_real_kodak_image_through_files(codecs, tmp_path):
    from rdkit_ae.data.sources import read_image

    codec = codecs["hyperprior"]
    report = compress_file(codec, KODAK, tmp_path / "k.rdk", verify=True)
    assert report.verified and report.header_bytes <= 19 and (tmp_path / "k.rdk").stat().st_size == report.nbytes
    decompress_file(codec, tmp_path / "k.rdk", tmp_path / "k.png")
    image, _ = read_image(KODAK)
    assert np.array_equal(read_image(tmp_path / "k.png")[0], reference(codec.model, image))


@pytest.mark.parametrize("name", ["conv-ste", "factorized", "hyperprior"])
def test_unpack_with_model_is_ready_for_model_decompress(codecs, name):
    codec = codecs[name]
    image = smooth_image(24, 40)
    info = container.unpack(codec.compress(image), layout=partial(latent_layout, codec.model))
    assert info.model_id == codec.id and info.size == (24, 40)
    with fixed_threads():
        x_hat = codec.model.decompress(info.strings, info.shape, info.size)["x_hat"]
    from rdkit_ae.data.sources import to_uint8

    assert np.array_equal(to_uint8(x_hat)[0], reference(codec.model, image))


def test_latent_layout_matches_the_quantizers(codecs):
    for name in ZOO:
        model = codecs[name].model
        for h, w in [(1, 1), (32, 32), (31, 95)]:
            layout = latent_layout(model, h, w)
            raw = model.compress(torch.zeros(1, 3, h, w))
            assert layout.streams == len(raw["strings"])
            got = raw["shape"]
            got = {k: tuple(v) for k, v in got.items()} if isinstance(got, dict) else tuple(got)
            assert layout.shape == got


# -- model identity ------------------------------------------------------------------
def test_model_id_is_stable_and_depends_on_weights(zoo_checkpoints, tmp_path):
    m1, r1, _ = load_model(zoo_checkpoints["factorized"])
    m2, r2, _ = load_model(zoo_checkpoints["factorized"])
    assert model_id(m1, r1) == model_id(m2, r2) and len(model_id(m1, r1)) == 4
    # Training settings do not change what a file decodes to: same id.
    r2.data["train"]["epochs"] = 7
    assert model_id(m2, r2) == model_id(m1, r1)
    other = make_checkpoint(tmp_path / "other.pt", "factorized", seed=1)
    m3, r3, _ = load_model(other)
    assert model_id(m3, r3) != model_id(m1, r1)


def test_model_mismatch_is_refused_naming_both_ids(codecs, zoo_checkpoints, tmp_path):
    image = smooth_image(32, 32)
    data = codecs["hyperprior"].compress(image)
    with pytest.raises(ModelMismatchError) as info:
        codecs["factorized"].decompress(data)
    msg = str(info.value)
    assert codecs["hyperprior"].id_hex in msg and codecs["factorized"].id_hex in msg
    # Same recipe, other weights: refused too.
    twin = Codec.load(make_checkpoint(tmp_path / "twin.pt", "hyperprior", seed=5))
    with pytest.raises(ModelMismatchError):
        twin.decompress(data)
    # Through the file API the message names the file and the checkpoint.
    (tmp_path / "a.rdk").write_bytes(data)
    with pytest.raises(FormatError, match=r"a\.rdk: made by model .* but .*twin\.pt is model"):
        decompress_file(twin, tmp_path / "a.rdk", tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_module_level_api_matches_codec(codecs):
    codec = codecs["conv-mse"]
    image = smooth_image(40, 24)
    data = compress_array(codec.model, image)
    assert data == codec.compress(image)
    assert np.array_equal(decompress_bytes(codec.model, data), codec.decompress(data))


def test_bad_arrays_are_refused(codecs):
    codec = codecs["conv-mse"]
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)):
        with pytest.raises(DataError):
            codec.compress(bad)
    with pytest.raises(DataError, match="above the limit"):
        Codec(codec.model, codec.recipe, codec.id, max_pixels=100).compress(np.zeros((11, 10, 3), np.uint8))


# -- checkpoints: conv-hybrid without VGG, malicious ones ---------------------------------
def test_conv_hybrid_never_touches_vgg(zoo_checkpoints, monkeypatch, tmp_path):
    from rdkit_ae.plugins import vgg

    def forbidden(*args, **kwargs):
        raise AssertionError("VGG was touched while building a model for coding")

    monkeypatch.setenv("RDKIT_VGG_WEIGHTS", str(tmp_path / "no-such-weights.pth"))
    for fn in ("build_features", "_load_file", "_download_torchvision"):
        monkeypatch.setattr(vgg, fn, forbidden)
    codec = Codec.load(zoo_checkpoints["conv-hybrid"])
    assert not any(type(m).__module__.endswith("vgg") for m in codec.model.modules())
    image = smooth_image(32, 32)
    assert np.array_equal(codec.decompress(codec.compress(image)), reference(codec.model, image))


class _Evil:
    """Pickles as a call to os.mkdir: loading it unsafely would create ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "rdkit-ae-checkpoint", "version": 1, "recipe": "", "model": {}, "x": _Evil(str(marker))}, path
    )
    with pytest.raises(CheckpointError) as info:
        Codec.load(path)
    assert "refused" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def _tamper(src: Path, dst: Path, edit) -> Path:
    payload = torch.load(src, weights_only=True)
    edit(payload["model"])
    payload.pop("model_sha256", None)  # as a crafted file would: the checks below must hold without the digest
    torch.save(payload, dst)
    return dst


@pytest.mark.parametrize(
    "case",
    [
        "last-not-65536",
        "not-increasing",
        "length-too-long",
        "rows-missing",
        "scale-table-negative",
        "nan-weight",
        "offset-huge",
    ],
)
def test_checkpoint_with_bad_entropy_tables_is_refused(zoo_checkpoints, tmp_path, case):
    src = zoo_checkpoints["hyperprior"]
    eb = "latent_codec.hyper.entropy_bottleneck."
    gc = "latent_codec.y.gaussian_conditional."

    def edit(sd):
        if case == "last-not-65536":
            cdf = sd[eb + "_quantized_cdf"]
            cdf[0, int(sd[eb + "_cdf_length"][0]) - 1] = 65000
        elif case == "not-increasing":
            sd[gc + "_quantized_cdf"][3, 2] = sd[gc + "_quantized_cdf"][3, 1]
        elif case == "length-too-long":
            sd[eb + "_cdf_length"][1] = sd[eb + "_quantized_cdf"].size(1) + 5
        elif case == "rows-missing":
            # Fewer CDF rows than scales: indexes past the table would be read by the C++ coder.
            for k in ("_quantized_cdf", "_cdf_length", "_offset"):
                sd[gc + k] = sd[gc + k][:10].clone()
        elif case == "scale-table-negative":
            sd[gc + "scale_table"][0] = -1.0
        elif case == "nan-weight":
            next(v for k, v in sd.items() if k.endswith("weight"))[0].view(-1)[0] = float("nan")
        elif case == "offset-huge":
            sd[eb + "_offset"][0] = -(1 << 30)

    with pytest.raises(CheckpointError) as info:
        Codec.load(_tamper(src, tmp_path / "bad.pt", edit))
    assert "\n" not in str(info.value)


def test_absurd_quantiles_refused_before_tables_are_built(zoo_checkpoints, tmp_path):
    eb = "latent_codec.entropy_bottleneck."

    def edit(sd):
        sd[eb + "quantiles"][0, 0, 2] = 1e12
        for k in ("_quantized_cdf", "_cdf_length", "_offset"):
            sd[eb + k] = torch.zeros(0, dtype=torch.int32)

    with pytest.raises(CheckpointError, match="quantiles"):
        Codec.load(_tamper(zoo_checkpoints["factorized"], tmp_path / "q.pt", edit))


def test_checkpoint_without_tables_gets_them_computed(tmp_path):
    path = make_checkpoint(tmp_path / "fresh.pt", "hyperprior", update=False)
    codec = Codec.load(path)
    image = smooth_image(48, 64)
    assert np.array_equal(codec.decompress(codec.compress(image)), reference(codec.model, image))


# -- latents the entropy coder cannot take -------------------------------------------------
@pytest.mark.parametrize("name", ["factorized", "hyperprior"])
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_extreme_latents_are_refused_not_crashed(zoo_checkpoints, name, scale):
    """Huge (or infinite) latents would overflow CompressAI's encoder buffer or hang it: refused."""
    model, recipe, _ = load_model(zoo_checkpoints[name])
    last_conv = [m for m in model.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last_conv.weight.mul_(scale)
        last_conv.bias.add_(scale)
    codec = Codec.from_model(model, recipe)
    with pytest.raises(RdkitError, match="entropy coder"):
        codec.compress(smooth_image(64, 64))


def test_guard_refuses_nan_symbols_directly():
    from rdkit_ae.guards import _check_encodable

    with pytest.raises(RdkitError, match="NaN"):
        _check_encodable([0] * 100 + [-(2**31)], [0] * 101, [5], [-2])
    with pytest.raises(RdkitError, match="buffer"):
        _check_encodable([5000] * 8, [0] * 8, [5], [-2])  # few symbols, all escaped: more bits than words
    _check_encodable([0, 1, 2, -1] * 50, [0] * 200, [5], [-2])
