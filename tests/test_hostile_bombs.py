"""Issue #12, decompression bombs: a tiny .rdk file cannot claim a huge image (child processes, time and memory).

Before the bound, an 81-byte file claiming 65535x268 decoded for 69 s and
peaked at 4.5 GB, and a 24-byte one claiming 2048x2048 took 12.5 s and 1.7 GB
(zoo-sized models). Without ``--max-pixels`` a file may now claim at most
``PIXELS_PER_BYTE`` pixels per coded byte (``FREE_PIXELS`` whatever its size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_codec_support import TINY, make_checkpoint
from test_hostile_support import assert_cheap, assert_one_line_error, baseline_peak_mb, run_cli

from rdkit_ae.codec import Codec, container
from rdkit_ae.codec.layout import latent_layout


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """Zoo-sized (untrained) checkpoints: the decoder's cost per pixel is a real model's."""
    root = tmp_path_factory.mktemp("bombs")
    return {name: make_checkpoint(root / f"{name}.pt", name) for name in ("factorized", "hyperprior")}


@pytest.fixture(scope="module")
def baseline_seconds(tmp_path_factory) -> float:
    """How long a cheap command takes on this machine now (CI machines are slow and shared)."""
    run = run_cli(tmp_path_factory.mktemp("base"), "info", "conv-mse")
    assert run.rc == 0
    return run.seconds


def _bomb(checkpoint: Path, height: int, width: int, stream_bytes: int, path: Path) -> Path:
    """An .rdk file with the model's id and stream count claiming ``height`` x ``width`` (packed unchecked)."""
    codec = Codec.load(checkpoint)
    streams = latent_layout(codec.model, 64, 64).streams
    strings = [[b"\x00" * stream_bytes]] * streams
    path.write_bytes(container.pack(codec.id, {"strings": strings, "size": (height, width)}, max_pixels=1 << 26))
    return path


@pytest.mark.parametrize("name", ["factorized", "hyperprior"])
@pytest.mark.parametrize("size", [(65535, 268), (2048, 2048)], ids=["65535x268", "2048x2048"])
def test_bomb_is_refused_from_its_header(zoo, baseline_seconds, tmp_path, name, size):
    bomb = _bomb(zoo[name], *size, 64 if size[0] == 65535 else 8, tmp_path / "bomb.rdk")
    assert bomb.stat().st_size < 200
    run = run_cli(tmp_path, "decompress", bomb, "-m", zoo[name], "-o", tmp_path / "out.png")
    assert_one_line_error(run, "pixels per byte", f"--max-pixels {size[0] * size[1]}")
    assert not (tmp_path / "out.png").exists()
    assert run.seconds < baseline_seconds + 20, (run.seconds, baseline_seconds)
    assert_cheap(run, extra_mb=300)


@pytest.mark.parametrize("name", ["factorized", "hyperprior"])
def test_the_largest_claim_of_a_small_file_decodes_cheaply(zoo, baseline_seconds, tmp_path, name):
    """A file of under 1 KB at the floor (512 x 512 pixels): decoded, well under 512 MB beyond the baseline."""
    side = int(container.FREE_PIXELS**0.5)
    bomb = _bomb(zoo[name], side, side, 8, tmp_path / "floor.rdk")
    assert bomb.stat().st_size < 1024
    run = run_cli(tmp_path, "decompress", bomb, "-m", zoo[name], "-o", tmp_path / "out.png")
    assert run.rc == 0, run.stderr[-2000:]
    assert Image.open(tmp_path / "out.png").size == (side, side)
    assert run.peak_mb < baseline_peak_mb() + 512, (run.peak_mb, baseline_peak_mb())
    assert run.seconds < baseline_seconds + 30, (run.seconds, baseline_seconds)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    recipe, overrides = TINY["factorized"]
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt", recipe, overrides)


def test_max_pixels_decodes_a_trusted_file_past_the_bound(tiny, tmp_path):
    data = _bomb(tiny, 600, 600, 8, tmp_path / "flat.rdk")
    assert_one_line_error(run_cli(tmp_path, "decompress", data, "-m", tiny, "-o", tmp_path / "a.png"), "per byte")
    run = run_cli(tmp_path, "decompress", data, "-m", tiny, "-o", tmp_path / "a.png", "--max-pixels", 360000)
    assert run.rc == 0 and Image.open(tmp_path / "a.png").size == (600, 600), run.stderr[-2000:]
    # An explicit limit is still a limit.
    run = run_cli(tmp_path, "decompress", data, "-m", tiny, "-o", tmp_path / "b.png", "--max-pixels", 359999)
    assert_one_line_error(run, "above the limit of 359,999")


def test_max_pixels_sets_the_image_readers_limit(tiny, tmp_path):
    """compress and eval read images under --max-pixels (else RDKIT_MAX_IMAGE_PIXELS), from the header."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / "a.png")
    run = run_cli(tmp_path, "compress", folder / "a.png", "-m", tiny, "--max-pixels", 1000)
    assert_one_line_error(run, "limit of 1,000 pixels")
    run = run_cli(tmp_path, "eval", tiny, "--data", folder, "--max-pixels", 1000)
    assert_one_line_error(run, "limit of 1,000 pixels")
    run = run_cli(tmp_path, "eval", tiny, "--data", folder, env={"RDKIT_MAX_IMAGE_PIXELS": "1000"})
    assert_one_line_error(run, "limit of 1,000 pixels")
    assert run_cli(tmp_path, "eval", tiny, "--data", folder, "--max-pixels", 1600).rc == 0
