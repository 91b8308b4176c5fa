"""Decode ``.rdk`` files as another machine would: other oneDNN kernels, oneDNN off, other thread counts.

One machine can stand in for others: ``ONEDNN_MAX_CPU_ISA=AVX2`` (or
``SSE41``) gives the convolution kernels of a CPU without AVX-512,
``torch.backends.mkldnn.enabled = False`` PyTorch's own, and a thread count
another split of the work. The variable must be set before torch loads, so
each condition decodes in a child process (``python -m
rdkit_ae.codec.crosscheck``); the tests and ``benchmarks/portability.py``
compare what it decodes with the encoder's machine.

``float_path=True`` decodes on the float entropy-parameter path that
version 1/2 files use, to show what the portable path prevents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# name -> (environment, mkldnn enabled, codec threads)
CONDITIONS: dict[str, tuple[dict[str, str], bool, int]] = {
    "default": ({}, True, 1),
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True, 1),
    "sse41": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, True, 1),
    "onednn-off": ({}, False, 1),
    "threads-2": ({}, True, 2),
}


@dataclass
class Decoded:
    """One file decoded under one condition: the image, or the one-line error that refused it."""

    file: str
    image: np.ndarray | None
    error: str | None


def decode_elsewhere(
    checkpoint: str | Path | Sequence[str | Path],
    files: Sequence[str | Path],
    condition: str,
    *,
    float_path: bool = False,
    timeout: int = 600,
) -> list[Decoded]:
    """Decode ``files`` in one child process under ``condition`` (a key of :data:`CONDITIONS`).

    ``checkpoint`` is one checkpoint for every file, or one per file (each loaded once).
    """
    env_extra, _, _ = CONDITIONS[condition]
    checkpoints = [checkpoint] * len(files) if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if len(checkpoints) != len(files):
        raise ValueError("one checkpoint, or one per file")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoded.npz"
        args: dict[str, Any] = {"checkpoints": [str(c) for c in checkpoints], "files": [str(f) for f in files]}
        args.update({"condition": condition, "float_path": float_path, "out": str(out)})
        env = {**os.environ, **env_extra}
        proc = subprocess.run(
            [sys.executable, "-m", "rdkit_ae.codec.crosscheck", json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"decoding under {condition} failed: {proc.stderr.strip()[-2000:]}")
        with np.load(out, allow_pickle=False) as data:
            errors = json.loads(str(data["errors"]))
            return [
                Decoded(str(f), data[f"image{i}"] if f"image{i}" in data else None, errors.get(str(i)))
                for i, f in enumerate(files)
            ]


def _child(args: dict) -> None:
    import torch

    from rdkit_ae.codec import determinism
    from rdkit_ae.codec.coder import Codec
    from rdkit_ae.codec.portability import entropy_path
    from rdkit_ae.errors import RdkitError

    _, mkldnn, threads = CONDITIONS[args["condition"]]
    torch.backends.mkldnn.enabled = mkldnn  # type: ignore[assignment]
    determinism.CODEC_THREADS = threads
    codecs: dict[str, Codec] = {}
    images: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for i, (ck, f) in enumerate(zip(args["checkpoints"], args["files"])):
        if ck not in codecs:
            codecs[ck] = Codec.load(ck)
        codec = codecs[ck]
        data = Path(f).read_bytes()
        try:
            if args["float_path"]:
                with entropy_path(codec.model, portable=False):
                    images[f"image{i}"] = codec.decompress(data, trusted=True)
            else:
                images[f"image{i}"] = codec.decompress(data, trusted=True)
        except RdkitError as exc:
            errors[str(i)] = str(exc)
    np.savez(args["out"], errors=np.array(json.dumps(errors)), **images)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
