"""Portable .rdk files: encoded with this machine's default kernels, decoded as other machines would.

Each condition of :data:`rdkit_ae.codec.crosscheck.CONDITIONS` (oneDNN limited
to AVX2 or SSE4.1, oneDNN off, two codec threads) decodes in a child process,
since ``ONEDNN_MAX_CPU_ISA`` must be set before torch loads. Version 3/4 files
carry a check of their symbols, so a file that decodes at all decoded the
encoder's symbols; the pixels may differ by one level (the float synthesis).
One test shows the float path of version 1/2 files failing under the same
conditions, and its desync refused by the symbol check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_codec_support import make_checkpoint

from rdkit_ae.codec import Codec
from rdkit_ae.codec.crosscheck import CONDITIONS, decode_elsewhere
from rdkit_ae.codec.portability import entropy_path

SMALL_VR = ["encoder.latent_channels=16", "encoder.channels=16", "quantizer.inner.N=16"]
# (recipe, overrides): every built-in entropy model, alone and under gain, and the CompressAI architectures.
MODELS = {
    "hyperprior": ("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]),
    "mean-scale": ("hyperprior", ["encoder.N=8", "encoder.M=12", 'quantizer.name="mean-scale-hyperprior"']),
    "checkerboard": ("hyperprior", ["encoder.N=8", "encoder.M=12", 'quantizer.name="checkerboard"']),
    "gain-hyperprior": ("fast-vr", SMALL_VR + ['quantizer.inner.name="hyperprior"']),
    "bmshj2018-hyperprior": ("bmshj2018-hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]),
    "mbt2018-mean": ("mbt2018-mean", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]),
    "fast-vr": ("fast-vr", []),  # the zoo's own sizes
    "fast-vr-checkerboard": ("fast-vr-checkerboard", []),
}
PHOTO = (512, 768)


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes, edges and fine texture: enough structure for a photograph's range of scales."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 200)
        img += (np.hypot(yy - cy, xx - cx) < r)[..., None] * rng.uniform(-60, 60, 3)
    img += 40 * np.sin(xx / rng.uniform(3, 30))[..., None] * np.cos(yy / rng.uniform(3, 30))[..., None]
    img += rng.normal(0, 6, img.shape) + 128
    return np.clip(img, 0, 255).astype(np.uint8)


def _rates(codec: Codec) -> list[float | None]:
    if not codec.model.variable_rate:
        return [None]
    return [0.0, float(len(codec.model.latent_codec.lambdas) - 1)]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Checkpoints and files (32x32 for every model, a 512x768 photograph for the zoo's fast-vr pair)."""
    root = tmp_path_factory.mktemp("portability")
    small = photo_like(32, 32, seed=1)
    photo = photo_like(*PHOTO, seed=2)
    cases = []
    for i, (name, (recipe, overrides)) in enumerate(MODELS.items()):
        ck = make_checkpoint(root / f"{name}.pt", recipe, overrides, seed=i)
        codec = Codec.load(ck)
        images = [("32x32", small)] + (
            [("photo", photo)] if name.startswith("fast-vr") or name == "mbt2018-mean" else []
        )
        for rate in _rates(codec):
            if rate is not None:
                codec.set_rate(rate=rate)
            for label, image in images:
                path = root / f"{name}-{label}-r{rate}.rdk"
                path.write_bytes(codec.compress(image))
                here = codec.decompress(path.read_bytes(), trusted=True)
                cases.append({"model": name, "checkpoint": ck, "path": path, "here": here, "label": label})
    return cases


@pytest.mark.parametrize("condition", [c for c in CONDITIONS if c != "default"])
def test_files_decode_to_the_same_pixels_as_on_other_machines(encoded, condition):
    decoded = decode_elsewhere([c["checkpoint"] for c in encoded], [c["path"] for c in encoded], condition)
    for case, dec in zip(encoded, decoded):
        where = f"{case['path'].name} under {condition}"
        assert dec.error is None, f"{where}: {dec.error}"  # the symbol check passed: the encoder's symbols
        diff = np.abs(dec.image.astype(np.int16) - case["here"].astype(np.int16))
        assert int(diff.max()) <= 1, f"{where}: pixels up to {int(diff.max())} levels apart"


def _sensitive(codec: Codec) -> None:
    """Put every scale a hair above a scale-table boundary, as a trained model puts a few: the float path's weak spot.

    The last ``h_s`` layer's scale outputs become ``boundary + tiny sums`` whose
    last bits depend on the summation order: a kernel that adds in another
    order picks the neighbouring CDF for some of them.
    """
    q = codec.model.latent_codec.inner
    last = q.hyper.h_s[-1]
    gc = q.gaussian
    m = q.channels
    with torch.no_grad():
        last.weight[:m].mul_(1e-6)
        last.bias[:m] = float(gc.scale_table[20])
    q.update(force=True)  # the portable path is rebuilt from the same weights


def test_the_float_path_breaks_on_other_machines_and_the_symbol_check_refuses_it(tmp_path):
    ck = make_checkpoint(tmp_path / "vr.pt", "fast-vr", SMALL_VR, seed=3)
    codec = Codec.load(ck)
    _sensitive(codec)
    from rdkit_ae.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "sensitive.pt", codec.model, codec.recipe)
    codec = Codec.load(tmp_path / "sensitive.pt")
    image = photo_like(256, 384, seed=4)
    files = {}
    for portable in (False, True):
        with entropy_path(codec.model, portable):
            path = tmp_path / f"{'exact' if portable else 'float'}.rdk"
            path.write_bytes(codec.compress(image))
            files[portable] = (path, codec.decompress(path.read_bytes(), trusted=True))
    refused = []
    for condition in ("sse41", "onednn-off"):
        (float_dec,) = decode_elsewhere(tmp_path / "sensitive.pt", [files[False][0]], condition, float_path=True)
        if float_dec.error is not None:
            assert "checksum mismatch" in float_dec.error and "\n" not in float_dec.error
            refused.append(condition)
        (exact_dec,) = decode_elsewhere(tmp_path / "sensitive.pt", [files[True][0]], condition)
        assert exact_dec.error is None
        assert int(np.abs(exact_dec.image.astype(np.int16) - files[True][1].astype(np.int16)).max()) <= 1
    assert refused, "the float path decoded the same symbols everywhere: the test lost its power to fail"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoded_on_cuda_decodes_on_the_cpu_and_the_reverse(tmp_path):
    image = photo_like(256, 384, seed=5)
    for name in ("fast-vr", "fast-vr-checkerboard"):
        ck = make_checkpoint(tmp_path / f"{name}.pt", name, [], seed=6)
        cpu = Codec.load(ck)
        gpu = Codec.from_model(Codec.load(ck).model.to("cuda"), cpu.recipe)
        assert gpu.id == cpu.id
        for rate in _rates(cpu):
            cpu.set_rate(rate=rate)
            gpu.set_rate(rate=rate)
            for encoder, decoder in ((gpu, cpu), (cpu, gpu)):
                data = encoder.compress(image)
                here = encoder.decompress(data, trusted=True)
                there = decoder.decompress(data, trusted=True)  # the symbol check passes, or this raises
                assert int(np.abs(here.astype(np.int16) - there.astype(np.int16)).max()) <= 1, (name, rate)


def test_old_checkpoints_convert_to_the_same_integers_everywhere(tmp_path):
    """Checkpoints without integer networks (0.1's, or saved before update) convert alike under any kernels."""
    import hashlib
    import os
    import subprocess
    import sys

    old = Path(__file__).parent / "data" / "v0.1" / "hyperprior.pt"
    vr = make_checkpoint(tmp_path / "vr.pt", "fast-vr-checkerboard", SMALL_VR, seed=7, update=False)
    code = (
        "import hashlib, sys, torch\n"
        "from rdkit_ae.checkpoint import load_model\n"
        "torch.backends.mkldnn.enabled = sys.argv[1] == '1'\n"
        "for path in sys.argv[2:]:\n"
        "    h = hashlib.sha256()\n"
        "    for k, v in sorted(load_model(path)[0].state_dict().items()):\n"
        "        if '.exact_' in k:\n"
        "            h.update(k.encode()); h.update(v.numpy().tobytes())\n"
        "    print(h.hexdigest())\n"
    )
    runs = []
    for env_extra, mkldnn in (({}, "1"), ({}, "0"), ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, "1")):
        res = subprocess.run(
            [sys.executable, "-c", code, mkldnn, str(old), str(vr)],
            env={**os.environ, **env_extra},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        runs.append(tuple(res.stdout.strip().splitlines()[-2:]))
    assert len(set(runs)) == 1, runs
    assert hashlib.sha256().hexdigest() not in runs[0]  # the integer networks were there to hash


def test_a_desynchronised_decoder_fails_in_one_line_through_the_cli(tmp_path):
    """A decoder whose side parameters differ from the encoder's (same model id) is refused, not decoded to garbage."""
    from PIL import Image
    from typer.testing import CliRunner

    from rdkit_ae.checkpoint import load_checkpoint, write_checkpoint
    from rdkit_ae.cli import app

    ck = make_checkpoint(tmp_path / "m.pt", "fast-vr", SMALL_VR, seed=8)
    Image.fromarray(photo_like(96, 128, seed=9)).save(tmp_path / "a.png")
    runner = CliRunner()
    res = runner.invoke(app, ["compress", str(tmp_path / "a.png"), "-m", str(ck), "-o", str(tmp_path / "a.rdk")])
    assert res.exit_code == 0, res.output
    payload = load_checkpoint(ck)
    key = next(k for k in payload["model"] if k.endswith("exact_h_s.b0"))
    payload["model"][key] = payload["model"][key] + (1 << 16)  # another machine's arithmetic, in effect
    write_checkpoint(tmp_path / "other.pt", payload)
    res = runner.invoke(
        app, ["decompress", str(tmp_path / "a.rdk"), "-m", str(tmp_path / "other.pt"), "-o", str(tmp_path / "b.png")]
    )
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "checksum mismatch after decoding" in lines[0], res.stderr
    assert not (tmp_path / "b.png").exists()
    ok = runner.invoke(app, ["decompress", str(tmp_path / "a.rdk"), "-m", str(ck), "-o", str(tmp_path / "c.png")])
    assert ok.exit_code == 0, ok.output
