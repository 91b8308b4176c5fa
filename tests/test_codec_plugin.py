"""Third-party quantizers in ``.rdk`` files: registered by a test, coded by ``rdkit compress`` / ``decompress``.

One quantizer wraps CompressAI's ``EntropyBottleneckLatentCodec`` and does not
describe its layout (the codec measures it); the other writes two streams of
raw bytes and describes its layout with ``bitstream_layout(h, w)``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import EntropyBottleneckLatentCodec, LatentCodec
from PIL import Image
from test_codec_support import make_checkpoint, reference, smooth_image
from typer.testing import CliRunner

import rdkit_ae
from rdkit_ae.cli import app
from rdkit_ae.codec import Codec, compress_array, container, latent_layout
from rdkit_ae.codec.container import Layout
from rdkit_ae.data.sources import read_image
from rdkit_ae.errors import PluginError, RdkitError
from rdkit_ae.model import build_model
from rdkit_ae.registry import REGISTRY

SMALL = ["encoder.N=8", "encoder.M=12"]  # the factorized recipe's GDN transforms, small


class ThirdPartyEntropyBottleneck(EntropyBottleneckLatentCodec):
    """CompressAI's own latent codec, as a third party would register it (no ``bitstream_layout``)."""

    def __init__(self, channels: int):
        super().__init__(EntropyBottleneck(channels))
        self.stride = 1


class TwoStreamBytes(LatentCodec):
    """Fixed rate, 8 bits per element; the first half of the channels in stream 0, the rest in stream 1."""

    stride = 1

    def __init__(self, channels: int, claimed_streams: int = 2):
        super().__init__()
        self.channels, self.half, self.claimed_streams = channels, channels // 2, claimed_streams

    def _symbols(self, y):
        return torch.round(torch.sigmoid(y) * 255)

    def forward(self, y):
        return {"y_hat": self._symbols(y) / 255, "likelihoods": {"y": torch.full_like(y, 1 / 256)}}

    def bitstream_layout(self, h: int, w: int):
        return {"hw": (h, w)}, self.claimed_streams

    def compress(self, y):
        sym = self._symbols(y)
        arr = sym.to(torch.uint8).cpu().numpy()
        strings = [[a[: self.half].tobytes() for a in arr], [a[self.half :].tobytes() for a in arr]]
        return {"strings": strings, "shape": {"hw": tuple(y.shape[-2:])}, "y_hat": sym / 255}

    def decompress(self, strings, shape, **kwargs):
        h, w = shape["hw"]
        rows = [np.frombuffer(a + b, np.uint8).reshape(self.channels, h, w) for a, b in zip(*strings)]
        return {"y_hat": torch.from_numpy(np.stack(rows)).float() / 255}


@pytest.fixture(scope="module")
def third_party():
    rdkit_ae.register("quantizer", "test-third-party-eb")(ThirdPartyEntropyBottleneck)
    rdkit_ae.register("quantizer", "test-two-stream-bytes")(TwoStreamBytes)
    yield
    REGISTRY.unregister("quantizer", "test-third-party-eb")
    REGISTRY.unregister("quantizer", "test-two-stream-bytes")


def _checkpoint(tmp_path, quantizer: str):
    return make_checkpoint(tmp_path / f"{quantizer}.pt", "factorized", SMALL + [f'quantizer.name="{quantizer}"'])


def _cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], terminal_width=250, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("quantizer, streams", [("test-third-party-eb", 1), ("test-two-stream-bytes", 2)])
def test_third_party_quantizer_through_the_cli_is_bit_exact(third_party, tmp_path, quantizer, streams):
    ck = _checkpoint(tmp_path, quantizer)
    image = smooth_image(27, 41, seed=5)  # not a multiple of the stride: padded and cropped
    Image.fromarray(image).save(tmp_path / "a.png")
    out = _cli("compress", tmp_path / "a.png", "-m", ck, "-o", tmp_path / "a.rdk", "--verify")
    assert "verified" in out
    _cli("decompress", tmp_path / "a.rdk", "-m", ck, "-o", tmp_path / "a.decoded.png")

    codec = Codec.load(ck)
    decoded, _ = read_image(tmp_path / "a.decoded.png")
    assert np.array_equal(decoded, reference(codec.model, image))
    data = (tmp_path / "a.rdk").read_bytes()
    assert data == codec.compress(image)  # the CLI wrote what the API writes
    packed = container.unpack(data, layout=partial(latent_layout, codec.model))
    assert len(packed.strings) == streams and packed.size == (27, 41)
    assert codec.model.latent_shape(27, 41) == (12, 4, 6)  # padded to 32x48, stride 8
    if quantizer == "test-two-stream-bytes":  # 6 + 6 channels of a 4x6 latent, 8 bits each
        assert [len(s[0]) for s in packed.strings] == [6 * 4 * 6, 6 * 4 * 6]
        assert packed.shape == {"hw": (4, 6)}
    else:  # measured by compressing a zero latent: CompressAI's shape, as plain ints
        assert not hasattr(codec.model.latent_codec, "bitstream_layout")
        assert packed.shape == (4, 6) and type(packed.shape[0]) is int


def test_a_layout_that_disagrees_with_compress_is_refused(third_party):
    torch.manual_seed(0)
    model = build_model("factorized", SMALL + ['quantizer.name="test-two-stream-bytes"', "quantizer.claimed_streams=3"])
    with pytest.raises(RdkitError, match="in 2 streams, but .* in 3 was derived; .rdk cannot store this quantizer"):
        compress_array(model.eval(), smooth_image(16, 16))


@pytest.mark.parametrize("claimed", [0, 9])
def test_a_layout_with_an_impossible_stream_count_is_a_plugin_error(third_party, claimed):
    model = build_model(
        "factorized", SMALL + ['quantizer.name="test-two-stream-bytes"', f"quantizer.claimed_streams={claimed}"]
    )
    with pytest.raises(PluginError, match=rf"bitstream_layout gave {claimed} streams \(1..8\)"):
        latent_layout(model, 32, 32)


def test_builtin_quantizers_describe_what_they_compress():
    """Each built-in quantizer's bitstream_layout equals the shape and stream count its compress gives."""
    for recipe, overrides in [
        ("conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=4"]),
        ("conv-ste", ["encoder.channels=[8, 16]", "encoder.latent_channels=4"]),
        ("factorized", SMALL),
        ("hyperprior", SMALL + ["quantizer.N=8"]),
    ]:
        model = build_model(recipe, overrides).eval()
        model.update(force=True)
        for h, w in [(1, 1), (32, 32), (31, 95)]:
            k, lh, lw = model.latent_shape(h, w)
            shape, streams = model.latent_codec.bitstream_layout(lh, lw)
            with torch.no_grad():
                raw = model.compress(torch.rand(1, 3, h, w))
            assert latent_layout(model, h, w) == Layout(shape, streams)
            assert streams == len(raw["strings"])
            got = raw["shape"]
            assert shape == ({k: tuple(v) for k, v in got.items()} if isinstance(got, dict) else tuple(got)), recipe
