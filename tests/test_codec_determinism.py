"""Bit-exact across processes and thread counts: decoded PNGs, .rdk bytes and entropy tables.

Two fresh processes, one with 1 thread and one with 2 (OMP_NUM_THREADS and
torch.set_num_threads), run the real CLI on the same inputs; everything they
write must be byte-identical, and identical to this process's results.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from test_codec_support import make_checkpoint, run_python, smooth_image

from rdkit_ae.codec import Codec

CHILD = r"""
import hashlib, json, sys
import torch
threads, spec = int(sys.argv[1]), json.loads(sys.argv[2])
torch.set_num_threads(threads)
from rdkit_ae.cli import app
from rdkit_ae.checkpoint import load_model

def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()

def tables(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if any(t in k for t in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")):
            h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()

out = {"threads": torch.get_num_threads(), "tables": {}, "png": {}, "rdk": {}}
for name, ck in spec["checkpoints"].items():
    out["tables"][name] = tables(load_model(ck)[0])
    outdir = f"{spec['dir']}/t{threads}-{name}"
    app(["compress", *spec["images"][name], "-m", ck, "--out-dir", outdir + "/rdk", "-q"], standalone_mode=False)
    app(["decompress", *spec["rdk"][name], "-m", ck, "--out-dir", outdir + "/png", "-q"], standalone_mode=False)
    for p in spec["images"][name]:
        stem = p.rsplit("/", 1)[1].rsplit(".", 1)[0]
        out["rdk"][f"{name}/{stem}"] = digest(f"{outdir}/rdk/{stem}.rdk")
    for p in spec["rdk"][name]:
        stem = p.rsplit("/", 1)[1].rsplit(".", 1)[0]
        out["png"][f"{name}/{stem}"] = digest(f"{outdir}/png/{stem}.png")
print("RESULT " + json.dumps(out))
"""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Checkpoints (one without stored tables), images and the .rdk files this process made."""
    from PIL import Image

    from rdkit_ae.codec import encode_image
    from rdkit_ae.data.sources import read_image

    root = tmp_path_factory.mktemp("determinism")
    checkpoints = {
        # Thread-dependent rounding showed up in conv-mse's 1x1 convolution at this size.
        "conv-mse": make_checkpoint(root / "conv-mse.pt", "conv-mse"),
        "hyperprior": make_checkpoint(root / "hyperprior.pt", "hyperprior"),
        # No stored tables: every process computes them, and must get the same ones.
        "factorized-fresh": make_checkpoint(root / "factorized-fresh.pt", "factorized", update=False),
    }
    sizes = {"conv-mse": [(512, 768), (37, 53)], "hyperprior": [(256, 384), (40, 40)], "factorized-fresh": [(96, 128)]}
    images = {}
    for i, (name, (h, w)) in enumerate(
        [("conv-mse", (512, 768)), ("hyperprior", (192, 256)), ("factorized-fresh", (96, 128))]
    ):
        p = root / f"img{i}.png"
        Image.fromarray(smooth_image(h, w, seed=10 + i)).save(p)
        images[name] = [p]
    local = {"rdk": {}, "png": {}, "tables": {}}
    rdk = {}
    for name, ck in checkpoints.items():
        codec = Codec.load(ck)
        rdk[name] = []
        for j, (h, w) in enumerate(sizes[name]):
            data = codec.compress(smooth_image(h, w, seed=j))
            p = root / f"{name}-{j}.rdk"
            p.write_bytes(data)
            rdk[name].append(p)
            local["png"][f"{name}/{p.stem}"] = _sha(encode_image(codec.decompress(data)))
        for p in images[name]:
            local["rdk"][f"{name}/{p.stem}"] = _sha(codec.compress(read_image(p)[0].copy()))
    spec = {
        "dir": str(root),
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "images": {k: [str(p) for p in v] for k, v in images.items()},
        "rdk": {k: [str(p) for p in v] for k, v in rdk.items()},
    }
    return spec, local


@pytest.fixture(scope="module")
def children(setup):
    spec, _ = setup
    results = {}
    for threads in (1, 2):
        res = run_python(CHILD, str(threads), json.dumps(spec), threads=threads, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
        results[threads] = json.loads(line[len("RESULT ") :])
    return results


def test_children_really_ran_with_different_thread_counts(children):
    assert children[1]["threads"] == 1 and children[2]["threads"] == 2


def test_decoded_png_bytes_identical_across_processes_and_threads(setup, children):
    _, local = setup
    assert children[1]["png"] == children[2]["png"] == local["png"]
    assert len(local["png"]) == 5


def test_compressed_bytes_identical_across_processes_and_threads(setup, children):
    _, local = setup
    assert children[1]["rdk"] == children[2]["rdk"] == local["rdk"]


def test_entropy_tables_identical_across_processes(children, setup):
    from rdkit_ae.checkpoint import load_model

    spec, _ = setup
    assert children[1]["tables"] == children[2]["tables"]
    # Stored tables are used as they are: load_model's update() does not recompute them.
    model, _, payload = load_model(spec["checkpoints"]["hyperprior"])
    for k, v in model.state_dict().items():
        if "_quantized_cdf" in k:
            assert torch.equal(v, payload["model"][k])


def test_same_process_repeated_runs_are_identical(setup):
    spec, _ = setup
    codec = Codec.load(spec["checkpoints"]["hyperprior"])
    image = smooth_image(64, 96, seed=99)
    first = codec.compress(image)
    decoded = codec.decompress(first)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            assert codec.compress(image) == first
            assert np.array_equal(codec.decompress(first), decoded)
    finally:
        torch.set_num_threads(before)
