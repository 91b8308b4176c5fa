"""`rdkit compress` / `rdkit decompress`: outputs, tables, conversions and the one-line error contract."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import test_codec_support as support
import torch
from PIL import Image
from test_codec_support import reference, run_rdkit, smooth_image
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.codec import Codec, container
from rdkit_ae.data.sources import read_image

# Shared session fixtures (pytest finds them as attributes of this module).
zoo_checkpoints = support.zoo_checkpoints
tiny_checkpoints = support.tiny_checkpoints

runner = CliRunner()


def rdkit(*args: str):
    return runner.invoke(app, [str(a) for a in args], terminal_width=250, env={"COLUMNS": "250"})


def save(path: Path, image: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(image, mode).save(path)
    return path


def one_line_error(res, *fragments: str) -> str:
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in res.output
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def ck(zoo_checkpoints):
    return zoo_checkpoints["hyperprior"]


@pytest.fixture(scope="module")
def codec(ck):
    return Codec.load(ck)


# -- happy paths ------------------------------------------------------------------------------
def test_compress_then_decompress_one_file(tmp_path, ck, codec):
    image = smooth_image(40, 56)
    src = save(tmp_path / "a.png", image)
    res = rdkit("compress", src, "-m", ck)
    assert res.exit_code == 0, res.output
    out = tmp_path / "a.rdk"
    nbytes = out.stat().st_size
    line = res.stdout.strip()
    assert line.startswith(f"{src} -> {out}: 56x40, {nbytes:,} bytes (container ")
    for word in ("bpp", "CR", "PSNR", "dB", "SSIM"):
        assert word in line
    assert f"{8 * nbytes / (40 * 56):.4f} bpp" in line

    res = rdkit("decompress", out, "-m", ck)
    assert res.exit_code == 0, res.output
    decoded = tmp_path / "a.decoded.png"  # never a.png: that is the original
    assert np.array_equal(read_image(decoded)[0], reference(codec.model, image))
    assert np.array_equal(read_image(src)[0], image)


def test_output_options(tmp_path, ck):
    src = save(tmp_path / "a.png", smooth_image(20, 20))
    assert rdkit("compress", src, "-m", ck, "-o", tmp_path / "sub" / "x.rdk").exit_code == 0
    assert rdkit("decompress", tmp_path / "sub" / "x.rdk", "-m", ck, "-o", tmp_path / "y.png").exit_code == 0
    assert rdkit("decompress", tmp_path / "sub" / "x.rdk", "-m", ck, "--out-dir", tmp_path / "dec").exit_code == 0
    assert files_in(tmp_path / "dec") == ["x.png"]
    assert (tmp_path / "y.png").read_bytes() == (tmp_path / "dec" / "x.png").read_bytes()
    assert rdkit("decompress", tmp_path / "sub" / "x.rdk", "-m", ck, "-o", tmp_path / "y.bmp").exit_code == 0
    assert np.array_equal(read_image(tmp_path / "y.bmp")[0], read_image(tmp_path / "y.png")[0])


def test_several_files_table_verify_and_same_bytes_as_alone(tmp_path, ck):
    srcs = [save(tmp_path / f"img{i}.png", smooth_image(24 + 8 * i, 32, seed=i)) for i in range(5)]
    res = rdkit("compress", *srcs, "-m", ck, "--out-dir", tmp_path / "out", "--verify")
    assert res.exit_code == 0, res.output
    assert files_in(tmp_path / "out") == [f"img{i}.rdk" for i in range(5)]
    for word in ("img0.png", "img4.png", "bpp", "PSNR dB", "SSIM", "mean"):
        assert word in res.stdout
    # Coded one at a time: the same image gives the same bytes alone.
    assert rdkit("compress", srcs[2], "-m", ck, "-o", tmp_path / "alone.rdk", "--verify").exit_code == 0
    assert (tmp_path / "alone.rdk").read_bytes() == (tmp_path / "out" / "img2.rdk").read_bytes()

    res = rdkit("decompress", *sorted((tmp_path / "out").iterdir()), "-m", ck, "--out-dir", tmp_path / "dec")
    assert res.exit_code == 0, res.output
    assert files_in(tmp_path / "dec") == [f"img{i}.png" for i in range(5)] and "mean" in res.stdout


def test_quiet(tmp_path, ck):
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    res = rdkit("compress", src, "-m", ck, "-q")
    assert res.exit_code == 0 and res.stdout == ""


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "gray16", "rgb-opaque-alpha"])
def test_non_rgb_inputs_are_converted_with_a_notice(tmp_path, ck, codec, kind):
    rgb = smooth_image(30, 20, seed=4)
    gray = rgb[..., 0]
    if kind == "gray":
        src = save(tmp_path / "in.png", gray, "L")
        expected = np.repeat(gray[..., None], 3, 2)
    elif kind == "rgba":
        alpha = np.full(gray.shape, 128, np.uint8)
        src = save(tmp_path / "in.png", np.dstack([rgb, alpha]), "RGBA")
        expected = rgb
    elif kind == "rgb-opaque-alpha":
        src = save(tmp_path / "in.png", np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]), "RGBA")
        expected = rgb
    elif kind == "palette":
        img = Image.fromarray(rgb).quantize(16)
        img.save(tmp_path / "in.png")
        src, expected = tmp_path / "in.png", np.asarray(img.convert("RGB"))
    else:
        g16 = gray.astype(np.uint16) * 257  # 16-bit with the same 8-bit content
        Image.fromarray(g16).save(tmp_path / "in.png")
        src, expected = tmp_path / "in.png", np.repeat(gray[..., None], 3, 2)
    res = rdkit("compress", src, "-m", ck, "-o", tmp_path / "x.rdk")
    assert res.exit_code == 0, res.output
    notes = res.stderr.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {src}: "), res.stderr
    assert rdkit("decompress", tmp_path / "x.rdk", "-m", ck, "-o", tmp_path / "x.png").exit_code == 0
    assert np.array_equal(read_image(tmp_path / "x.png")[0], reference(codec.model, expected))


# -- usage errors -----------------------------------------------------------------------------
def test_output_flag_with_several_inputs(tmp_path, ck):
    a, b = save(tmp_path / "a.png", smooth_image(8, 8)), save(tmp_path / "b.png", smooth_image(8, 8))
    one_line_error(
        rdkit("compress", a, b, "-m", ck, "-o", tmp_path / "x.rdk"), "-o/--output takes one input", "--out-dir"
    )
    one_line_error(rdkit("compress", a, "-m", ck, "-o", tmp_path / "x.rdk", "--out-dir", tmp_path), "not both")
    assert not (tmp_path / "x.rdk").exists()


def test_refuses_to_overwrite_inputs_or_collide(tmp_path, ck):
    a = save(tmp_path / "a.png", smooth_image(8, 8))
    one_line_error(rdkit("compress", a, "-m", ck, "-o", a), "refusing to overwrite the input")
    (tmp_path / "d1").mkdir(), (tmp_path / "d2").mkdir()
    x1, x2 = save(tmp_path / "d1" / "x.png", smooth_image(8, 8)), save(tmp_path / "d2" / "x.png", smooth_image(8, 8))
    one_line_error(rdkit("compress", x1, x2, "-m", ck, "--out-dir", tmp_path / "out"), "would both be written")
    assert not (tmp_path / "out").exists()
    one_line_error(rdkit("decompress", a, "-m", ck, "-o", tmp_path / "x.jpg"), "lossless")


def test_bad_inputs_to_compress(tmp_path, ck):
    (tmp_path / "notes.txt").write_text("not an image\n")
    one_line_error(rdkit("compress", tmp_path / "notes.txt", "-m", ck), "notes.txt", "not a readable image")
    one_line_error(rdkit("compress", tmp_path / "missing.png", "-m", ck), "input not found")
    (tmp_path / "cut.png").write_bytes((save(tmp_path / "ok.png", smooth_image(64, 64))).read_bytes()[:100])
    one_line_error(rdkit("compress", tmp_path / "cut.png", "-m", ck), "cut.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.png", "notes.txt", "ok.png"]


def test_bad_checkpoints(tmp_path):
    a = save(tmp_path / "a.png", smooth_image(8, 8))
    one_line_error(rdkit("compress", a, "-m", tmp_path / "missing.pt"), "checkpoint not found")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    one_line_error(rdkit("compress", a, "-m", tmp_path / "junk.pt"), "not a readable checkpoint")
    import pickle

    (tmp_path / "bare.pt").write_bytes(pickle.dumps(_Evil(str(tmp_path / "pwned-too"))))
    one_line_error(rdkit("compress", a, "-m", tmp_path / "bare.pt"), "not a readable checkpoint")
    marker = tmp_path / "pwned"
    torch.save(
        {"format": "rdkit-ae-checkpoint", "version": 1, "recipe": "", "model": {}, "x": _Evil(str(marker))},
        tmp_path / "evil.pt",
    )
    one_line_error(rdkit("decompress", a, "-m", tmp_path / "evil.pt"), "refused", "GLOBAL posix.mkdir")
    assert not marker.exists() and not (tmp_path / "pwned-too").exists()


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# -- corrupt .rdk files ---------------------------------------------------------------------------
def _crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


@pytest.fixture(scope="module")
def good_rdk(codec):
    return codec.compress(smooth_image(32, 32))


BAD = {
    "empty": (lambda g, c: b"", "empty file"),
    "truncated": (lambda g, c: g[: len(g) // 2], "truncated"),
    "wrong-magic": (lambda g, c: b"PK" + g[2:], "not an .rdk file"),
    "png-renamed": (lambda g, c: b"\x89PNG\r\n\x1a\n" + g, "not an .rdk file"),
    "version-9": (lambda g, c: _crc(g[:2] + b"\x09" + g[3:-4]), "unsupported .rdk version 9"),
    "absurd-size": (
        lambda g, c: _crc(b"RK\x01" + c.id + b"\xff\xff\x03\xff\xff\x03\x01" + b"\0" * 16),
        "above the limit",
    ),
    "huge-length": (lambda g, c: _crc(b"RK\x01" + c.id + b"\x20\x20\x02\xff\xff\xff\xff\x0f" + b"\0" * 16), "declare"),
    "trailing-garbage": (lambda g, c: g + b"\0\0\0\0", "checksum"),
    "bit-flip": (lambda g, c: g[:20] + bytes([g[20] ^ 4]) + g[21:], "checksum"),
    "other-model": (lambda g, c: _crc(g[:3] + b"\0\0\0\0" + g[7:-4]), "made by model 00000000"),
    "stream-cut-not-words": (
        lambda g, c: container.pack(
            c.id, {"strings": [[s[0][:-3]] for s in container.unpack(g).strings], "size": (32, 32)}
        ),
        "multiple of 4",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_corrupt_files_give_one_line_and_no_output(tmp_path, ck, codec, good_rdk, case):
    make, fragment = BAD[case]
    bad = tmp_path / "in" / "bad.rdk"
    bad.parent.mkdir()
    bad.write_bytes(make(good_rdk, codec))
    one_line_error(rdkit("decompress", bad, "-m", ck, "--out-dir", tmp_path / "out"), str(bad), fragment)
    assert files_in(tmp_path / "out") == []  # no output, no temp file


def test_error_midway_keeps_complete_outputs_only(tmp_path, ck, good_rdk):
    (tmp_path / "a.rdk").write_bytes(good_rdk)
    (tmp_path / "b.rdk").write_bytes(good_rdk[:-1])
    one_line_error(
        rdkit("decompress", tmp_path / "a.rdk", tmp_path / "b.rdk", "-m", ck, "--out-dir", tmp_path / "out"), "b.rdk"
    )
    assert files_in(tmp_path / "out") == ["a.png"]
    assert Image.open(tmp_path / "out" / "a.png").size == (32, 32)


def test_max_pixels_option(tmp_path, ck):
    src = save(tmp_path / "a.png", smooth_image(40, 40))
    one_line_error(rdkit("compress", src, "-m", ck, "--max-pixels", "1000"), "limit of 1,000 pixels")
    assert rdkit("compress", src, "-m", ck).exit_code == 0
    one_line_error(rdkit("decompress", tmp_path / "a.rdk", "-m", ck, "--max-pixels", "1000"), "--max-pixels")
    assert rdkit("decompress", tmp_path / "a.rdk", "-m", ck, "--max-pixels", "1600").exit_code == 0


# -- the real console entry point, in fresh processes -----------------------------------------------
def _assert_clean_failure(res, fragment: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr


def test_subprocess_truncated_file(tmp_path, ck, good_rdk):
    (tmp_path / "t.rdk").write_bytes(good_rdk[:12])
    res = run_rdkit("decompress", str(tmp_path / "t.rdk"), "-m", str(ck), "-o", str(tmp_path / "t.png"))
    _assert_clean_failure(res, "truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.rdk"]


def test_subprocess_non_image_and_missing_checkpoint(tmp_path, ck):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    _assert_clean_failure(run_rdkit("compress", str(tmp_path / "x.jpg"), "-m", str(ck)), "not a readable image")
    _assert_clean_failure(
        run_rdkit("decompress", str(tmp_path / "x.rdk"), "-m", str(tmp_path / "none.pt")), "not found"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg"]
