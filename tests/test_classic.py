"""Classical codecs: real files through Pillow, full bytes counted, same metrics as models."""

import io

import numpy as np
import pytest
from PIL import Image
from synthetic import smooth_images

from rdkit_ae.data.sources import ImageSet
from rdkit_ae.evaluation import classic
from rdkit_ae.evaluation.metrics import psnr

MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "webp": (8, b"WEBP"), "avif": (4, b"ftyp")}
CODECS = [c for c in classic.CODECS if classic.available(c)]


def test_jpeg_and_webp_are_available():
    assert "jpeg" in CODECS and "webp" in CODECS


@pytest.mark.parametrize("codec", CODECS)
def test_encode_makes_a_real_decodable_file(codec, tmp_path):
    img = smooth_images(1)[0]
    data = classic.encode(img, codec, 50)
    offset, magic = MAGIC[codec]
    assert data[offset : offset + len(magic)] == magic
    path = tmp_path / f"x.{codec}"
    path.write_bytes(data)
    with Image.open(path) as f:  # an ordinary file any viewer would open
        f.load()
        assert f.size == (32, 32)
    assert classic.decode(data).shape == (32, 32, 3)


@pytest.mark.parametrize("codec", CODECS)
def test_evaluate_codec_counts_full_file_bytes(codec):
    x = smooth_images(5)
    res = classic.evaluate_codec(ImageSet("smooth", x), codec, 60)
    assert [r["name"] for r in res.records] == [f"smooth[{i}]" for i in range(5)]
    for img, rec in zip(x, res.records):
        data = classic.encode(img, codec, 60)  # deterministic encoders: same file again
        assert rec["bytes"] == len(data)
        assert rec["bpp"] == pytest.approx(8 * len(data) / (32 * 32))
        assert rec["cr"] == pytest.approx(24 / rec["bpp"])
        assert rec["psnr"] == pytest.approx(psnr(img[None], classic.decode(data)[None])[0])
        assert rec["quality"] == 60 and 0 < rec["ssim"] <= 1 and rec["ms_ssim"] is None
    assert res.summary["bpp"] == pytest.approx(np.mean([r["bpp"] for r in res.records]))
    assert res.summary["cr"] == pytest.approx(24 / res.summary["bpp"])
    assert res.name == classic.get_codec(codec).label
    entry = res.to_compressai()
    assert entry["results"]["bpp"] == [pytest.approx(res.summary["bpp"])]


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_quality_sweep_trades_bytes_for_psnr(codec):
    images = ImageSet("smooth", smooth_images(4, 40, 48))
    lo, hi = classic.sweep(images, codec, [10, 90])
    assert lo.summary["bytes"] < hi.summary["bytes"]
    assert lo.summary["psnr"] < hi.summary["psnr"]
    assert lo.records[0]["height"] == 40 and lo.records[0]["width"] == 48


def test_jpeg_uses_optimized_tables():
    img = smooth_images(1)[0]
    plain = io.BytesIO()
    Image.fromarray(img).save(plain, "JPEG", quality=75)
    assert len(classic.encode(img, "jpeg", 75)) < len(plain.getvalue())


def test_unknown_codec_and_bad_quality_are_user_errors():
    with pytest.raises(classic.CodecError, match="unknown classical codec 'bpg'"):
        classic.get_codec("bpg")
    with pytest.raises(classic.CodecError, match="quality must be 0..100"):
        classic.encode(smooth_images(1)[0], "webp", 101)
