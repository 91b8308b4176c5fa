"""Coverage-guided (libFuzzer) fuzzing of the untrusted inputs with atheris; run by hand, not in CI.

    pip install atheris        # a binary wheel for CPython 3.11 on x86-64 Linux
    python tests/fuzz/atheris_inputs.py rdk [libFuzzer options, e.g. -max_total_time=600 corpus/]
    python tests/fuzz/atheris_inputs.py checkpoint -max_total_time=600
    python tests/fuzz/atheris_inputs.py image -max_len=4096

Targets: ``rdk`` (the container parser and the full decode path with a tiny
model), ``checkpoint`` (``load_model`` on the bytes, then a guarded
``compress``), ``image`` (``read_image`` with a 64K-pixel limit). Anything but
an :class:`~rdkit_ae.errors.RdkitError` with a one-line message, a crash or
a hang (``-timeout=``) is a finding; libFuzzer writes the input to
``crash-*``.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import atheris
import compressai  # noqa: F401 - imported first: only rdkit_ae is instrumented (torch would take minutes)
import numpy as np
import torch

with atheris.instrument_imports(include=["rdkit_ae"]):
    from rdkit_ae.checkpoint import load_model, save_checkpoint
    from rdkit_ae.codec import Codec
    from rdkit_ae.data.sources import read_image
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.model import build_model

TINY = ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]
WORK = Path(tempfile.mkdtemp(prefix="rdkit-atheris-"))


def _one_line(exc: RdkitError) -> None:
    if not str(exc) or "\n" in str(exc):
        raise AssertionError(f"not a one-line error: {exc!r}")


def _tiny_checkpoint() -> Path:
    torch.manual_seed(0)
    model = build_model("hyperprior", TINY).eval()
    model.update(force=True)
    path = WORK / "tiny.pt"
    save_checkpoint(path, model, model.recipe)
    return path


def rdk_target() -> tuple:
    codec = Codec.load(_tiny_checkpoint())
    seed = codec.compress(np.full((16, 16, 3), 100, np.uint8))

    def run(data: bytes) -> None:
        # Half the inputs keep the real header so the decoder, not only the parser, is exercised.
        if data[:1] == b"\x00":
            data = seed[:7] + data[1:]
        try:
            codec.decompress(data)
        except RdkitError as exc:
            _one_line(exc)

    return run, [seed]


def checkpoint_target() -> tuple:
    path = WORK / "fuzzed.pt"

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            model, _, _ = load_model(path)
            model.compress(torch.rand(1, 3, 16, 16))
        except RdkitError as exc:
            _one_line(exc)

    return run, [_tiny_checkpoint().read_bytes()]


def image_target() -> tuple:
    from PIL import Image

    path = WORK / "fuzzed.img"

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            image, _ = read_image(path, max_pixels=1 << 16)
        except RdkitError as exc:
            _one_line(exc)
            return
        assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[0] * image.shape[1] <= 1 << 16

    seeds = []
    for fmt in ("PNG", "BMP", "PPM", "TIFF", "JPEG", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(np.arange(12 * 9 * 3, dtype=np.uint8).reshape(9, 12, 3)).save(buf, format=fmt)
        seeds.append(buf.getvalue())
    return run, seeds


TARGETS = {"rdk": rdk_target, "checkpoint": checkpoint_target, "image": image_target}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus folders]")
    run, seeds = TARGETS[sys.argv[1]]()
    args = [sys.argv[0], *sys.argv[2:]]
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if corpus:  # start from valid files: random bytes rarely get past the first checks
        folder = Path(corpus[0])
        folder.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds):
            (folder / f"seed-{i}").write_bytes(seed)
    atheris.Setup(args, lambda data: run(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
