"""ONNX export and the ONNX Runtime decoder: checked graphs, the torch decoder's symbols, pixels within one level.

Small untrained (but ``update()``d) models of every supported family, and
photograph-like images (64x96 and 32x32): the export passes ``onnx.checker``,
decoding a torch-encoded file in ONNX Runtime gives the torch decoder's
symbols exactly and pixels at most one level apart, the CLI round trip works,
and damaged, foreign, old and hostile inputs fail in one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from compressai.entropy_models import EntropyModel
from PIL import Image
from test_codec_support import make_checkpoint
from test_portability import photo_like
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.codec import Codec, container, latent_layout
from rdkit_ae.codec.determinism import fixed_threads
from rdkit_ae.codec.rate import file_rate
from rdkit_ae.errors import FormatError, RdkitError
from rdkit_ae.guards import SymbolLedger

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from rdkit_ae.interop.onnx import ExportDirError, OnnxDecoder, UnsupportedModel, export_onnx  # noqa: E402

SMALL_VR = ["encoder.latent_channels=16", "encoder.channels=16", "quantizer.inner.N=16"]
TINY = ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]
MODELS = {
    "fast-vr": ("fast-vr", SMALL_VR),
    "hyperprior": ("hyperprior", TINY),
    "mean-scale": ("hyperprior", TINY[:2] + ['quantizer.name="mean-scale-hyperprior"']),
    "checkerboard": ("fast-vr-checkerboard", SMALL_VR),
}
IMAGES = {"64x96": photo_like(64, 96, seed=3), "32x32": photo_like(32, 32, seed=4)}
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=250, env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (checkpoint, export folder, codec)."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for i, (name, (recipe, overrides)) in enumerate(MODELS.items()):
        ck = make_checkpoint(root / f"{name}.pt", recipe, overrides, seed=10 + i)
        folder = root / f"{name}-onnx"
        export_onnx(ck, folder)
        out[name] = (ck, folder, Codec.load(ck))
    return out


class Recorder(SymbolLedger):
    """A ledger that also keeps every symbol array, in decoding order."""

    def __init__(self) -> None:
        super().__init__("decode")
        self.arrays: list[np.ndarray] = []

    def add(self, symbols) -> None:
        self.arrays.append(np.array(symbols, dtype=np.int32).reshape(-1))
        super().add(symbols)


def torch_decode(codec: Codec, data: bytes) -> tuple[np.ndarray, Recorder]:
    """The torch decoder's image and symbols of a file."""
    packed = container.unpack(data, pixels_per_byte=None)
    coders = [m.entropy_coder for m in codec.model.modules() if isinstance(m, EntropyModel)]
    recorder = Recorder()
    for coder in coders:
        coder.ledger = recorder
    try:
        with file_rate(codec.model, packed.rate), fixed_threads():
            codec.model.decompress(packed.strings, latent_layout(codec.model, *packed.size).shape, packed.size)
    finally:
        for coder in coders:
            coder.ledger = None
    return codec.decompress(data, trusted=True), recorder


def packed_streams(data: bytes) -> list:
    return container.unpack(data, pixels_per_byte=None).strings


def test_export_holds_checked_graphs_tables_and_manifest(exported):
    _, folder, codec = exported["checkerboard"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_id"] == codec.id_hex and manifest["family"] == "checkerboard"
    assert manifest["decodes_rdk_versions"] == [3, 4] and manifest["rans"]["precision"] == 16
    assert set(manifest["graphs"]) == {
        "analysis",
        "hyper_analysis",
        "hyper_synthesis",
        "context",
        "parameters",
        "synthesis",
    }
    for spec in manifest["graphs"].values():
        onnx.checker.check_model(onnx.load(folder / spec["file"]), full_check=True)
    with np.load(folder / "tables.npz", allow_pickle=False) as tables:
        assert tables["y_cdf"].dtype == np.int32 and tables["gain_inverse_grid"].shape == (25, 16)
    assert manifest["variable_rate"]["lambdas"] == list(codec.model.latent_codec.lambdas)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_decode_gives_the_torch_symbols_and_pixels_within_one_level(exported, name):
    _, folder, codec = exported[name]
    decoder = OnnxDecoder(folder)
    rates = [None] if not codec.model.variable_rate else [0.0, 6.0, 2.3]  # 2.3: off the quarter grid
    for rate in rates:
        if rate is not None:
            codec.set_rate(rate=rate)
        for label, image in IMAGES.items():
            data = codec.compress(image)
            reference, recorder = torch_decode(codec, data)
            decoded = decoder.decode(data)
            where = f"{name} {label} rate {rate}"
            assert len(decoded.symbols) == len(recorder.arrays) == len(packed_streams(data)), where
            assert [s.reshape(-1).tolist() for s in decoded.symbols] == [a.tolist() for a in recorder.arrays], where
            assert decoded.digest == recorder.digest, where
            assert decoded.image.shape == image.shape and decoded.image.dtype == np.uint8
            diff = np.abs(decoded.image.astype(np.int16) - reference.astype(np.int16))
            assert int(diff.max()) <= 1, f"{where}: pixels up to {int(diff.max())} levels apart"


def test_compress_graphs_agree_with_torch(exported):
    import torch

    _, folder, codec = exported["fast-vr"]
    from rdkit_ae.interop.onnx.graphs import session

    x = torch.from_numpy(IMAGES["64x96"]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = codec.model.g_a(x)
    out = session((folder / "analysis.onnx").read_bytes()).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, y.numpy(), rtol=1e-4, atol=1e-4 * float(y.abs().max()))


def test_cli_export_and_decompress_round_trip(exported, tmp_path):
    ck, _, codec = exported["fast-vr"]
    result = cli("export", "onnx", ck, "-o", tmp_path / "exp")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and codec.id_hex in result.output
    rdk = tmp_path / "a.rdk"
    rdk.write_bytes(codec.compress(IMAGES["64x96"]))
    result = cli("decompress", rdk, "--backend", "onnx", "--onnx", tmp_path / "exp", "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    decoded = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))
    reference = codec.decompress(rdk.read_bytes())
    assert int(np.abs(decoded.astype(np.int16) - reference).max()) <= 1
    # An existing export is replaced only with --force; options must fit the backend.
    assert "already there" in cli("export", "onnx", ck, "-o", tmp_path / "exp").output
    assert cli("export", "onnx", ck, "-o", tmp_path / "exp", "--force").exit_code == 0
    assert "needs --onnx" in cli("decompress", rdk, "--backend", "onnx", "-o", tmp_path / "b.png").output
    assert "drop --model" in cli("decompress", rdk, "--backend", "onnx", "--onnx", tmp_path / "exp", "-m", ck).output


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_damaged_old_and_foreign_files_fail_in_one_line(exported):
    _, folder, codec = exported["mean-scale"]
    decoder = OnnxDecoder(folder)
    data = bytearray(codec.compress(IMAGES["64x96"]))
    packed = container.unpack(bytes(data))
    damaged = bytearray(data)
    damaged[packed.header_bytes] ^= 0x55  # the first byte of the y stream
    with pytest.raises(FormatError) as e:
        decoder.decompress(bytes(damaged))
    assert "checksum mismatch" in _one_line_error(e) or "corrupt" in _one_line_error(e)
    with pytest.raises(FormatError) as e:
        decoder.decompress(bytes(data[:-9]))
    assert "corrupt" in _one_line_error(e) or "truncated" in _one_line_error(e)
    other = exported["hyperprior"][2].compress(IMAGES["32x32"])
    with pytest.raises(FormatError) as e:
        decoder.decompress(other)
    assert "made by model" in _one_line_error(e) and codec.id_hex in _one_line_error(e)
    # A version 1 file (rdkit-ae 0.1-0.2, float entropy path): refused, not decoded to a wrong image.
    old = container.pack(codec.id, {"strings": [[s[0]] for s in packed.strings], "size": packed.size})
    with pytest.raises(FormatError) as e:
        decoder.decompress(old)
    assert "versions 3 and 4" in _one_line_error(e)


def test_unsupported_models_are_refused_naming_what_is_supported(tmp_path):
    ck = make_checkpoint(tmp_path / "f.pt", "factorized", ["encoder.N=8", "encoder.M=12"])
    with pytest.raises(UnsupportedModel) as e:
        export_onnx(ck, tmp_path / "out")
    assert "hyperprior, mean-scale-hyperprior and checkerboard" in _one_line_error(e)
    assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RdkitError, match="not an ONNX export"):
        export_onnx(ck, tmp_path / "busy", force=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_hostile_export_folders_are_refused(exported, tmp_path):
    _, folder, _ = exported["hyperprior"]
    bad = _copy(folder, tmp_path)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["graphs"]["synthesis"]["file"] = "../synthesis.onnx"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportDirError, match="not a plain .onnx name") as e:
        OnnxDecoder(bad)
    _one_line_error(e)

    bad = _copy(folder, tmp_path / "t")
    with np.load(bad / "tables.npz") as t:
        arrays = dict(t)
    arrays["y_cdf"][0, 1] = 0  # not strictly increasing: the C++ coder would misbehave
    np.savez(bad / "tables.npz", **arrays)
    with pytest.raises(ExportDirError, match="CDF tables are not valid"):
        OnnxDecoder(bad)
    arrays["y_cdf"] = np.array([object()] * 4, dtype=object)  # a pickle: never loaded
    np.savez(bad / "tables.npz", **arrays)
    with pytest.raises(ExportDirError):
        OnnxDecoder(bad)

    bad = _copy(folder, tmp_path / "g")
    (bad / "synthesis.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ExportDirError, match="synthesis"):
        OnnxDecoder(bad)


def test_missing_onnxruntime_gives_the_install_hint(exported, tmp_path):
    _, folder, codec = exported["hyperprior"]
    rdk = tmp_path / "a.rdk"
    rdk.write_bytes(codec.compress(IMAGES["32x32"]))
    # onnxruntime "not installed": found (torch probes specs at import), but importing it fails.
    code = (
        "import importlib.abc, importlib.machinery, sys\n"
        "class Missing(importlib.abc.Loader):\n"
        "    def create_module(self, spec):\n"
        "        raise ImportError('No module named onnxruntime')\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            return importlib.machinery.ModuleSpec(name, Missing())\n"
        "sys.meta_path.insert(0, Block())\n"
        "from rdkit_ae.cli import run\n"
        "sys.argv = ['rdkit', *sys.argv[1:]]\n"
        "run()\n"
    )
    args = ["decompress", str(rdk), "--backend", "onnx", "--onnx", str(folder), "-o", str(tmp_path / "a.png")]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: the ONNX backend needs the 'onnxruntime' package: pip install 'rdkit-ae[onnx]'"]
