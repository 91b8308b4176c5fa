"""Issue #12, crafted checkpoints: every path that codes with one refuses it in one line (never crashes or hangs).

The C++ rANS coder segfaults on random or short CDF rows, divides by zero on
flat ones, loops forever on NaN latents and writes past its buffer on huge
ones. Each case runs in a child process, so a crash fails the test instead of
the test run: ``rdkit eval``, ``rdkit compress``, ``rdkit decompress``, the
bench's evaluation job and the Python API (``load_model`` then ``compress``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_codec_support import TINY, make_checkpoint, run_python, smooth_image
from test_hostile_support import Run, assert_one_line_error, run_cli
from train_helpers import make_npz

from rdkit_ae.codec import Codec

EB = "latent_codec.hyper.entropy_bottleneck."
GC = "latent_codec.y.gaussian_conditional."
SECONDS = 90  # each case is refused in seconds; the bugs crashed at once or ran for minutes


def _random_row(sd):
    rng = np.random.default_rng(1)
    row = sd[EB + "_quantized_cdf"][0]
    row.copy_(torch.from_numpy(rng.integers(-(1 << 20), 1 << 20, row.numel()).astype(np.int32)))


def _short_row(sd):
    sd[GC + "_cdf_length"][2] = 1


def _flat(sd):
    sd[EB + "_quantized_cdf"].zero_()


def _nan_weight(sd):
    next(v for k, v in sd.items() if k.startswith("g_a") and k.endswith("weight")).view(-1)[0] = float("nan")


def _huge_bias(sd):
    # Finite weights and valid tables, but latents far outside the tables: the encoder's buffer would overflow.
    last_bias = [k for k in sd if k.startswith("g_a") and k.endswith("bias")][-1]
    sd[last_bias] += 1e5


CASES = {
    "random-row": (_random_row, "CDF"),
    "short-row": (_short_row, "CDF"),
    "flat-cdf": (_flat, "CDF"),
    "nan-weight": (_nan_weight, "NaN"),
    "huge-bias": (_huge_bias, "entropy coder"),
}
REFUSED_AT_LOAD = ("random-row", "short-row", "flat-cdf", "nan-weight")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted")
    recipe, overrides = TINY["hyperprior"]
    good = make_checkpoint(root / "good.pt", recipe, overrides)
    crafted = {}
    for name, (edit, _) in CASES.items():
        payload = torch.load(good, weights_only=True)
        edit(payload["model"])
        payload.pop("model_sha256", None)  # a crafted file carries no (or a matching) digest
        torch.save(payload, root / f"{name}.pt")
        crafted[name] = root / f"{name}.pt"
    image = smooth_image(32, 48)
    Image.fromarray(image).save(root / "img.png")
    (root / "img.rdk").write_bytes(Codec.load(good).compress(image))
    npz = make_npz(root / "data.npz", n=4, size=32)
    return {"good": good, "crafted": crafted, "png": root / "img.png", "rdk": root / "img.rdk", "npz": npz}


def _refused(run: Run, fragment: str) -> None:
    assert run.rc >= 0, f"killed by signal {-run.rc}: {run.stderr[-2000:]}"
    assert_one_line_error(run, fragment)
    assert run.seconds < SECONDS, run.seconds


def test_the_good_checkpoint_codes(files, tmp_path):
    """The control: the untampered checkpoint passes every path the crafted ones are refused on."""
    run = run_cli(tmp_path, "eval", files["good"], "--data", files["npz"])
    assert run.rc == 0, run.stderr[-2000:]
    run = run_cli(tmp_path, "compress", files["png"], "-m", files["good"], "-o", tmp_path / "x.rdk")
    assert run.rc == 0 and (tmp_path / "x.rdk").read_bytes() == files["rdk"].read_bytes(), run.stderr[-2000:]


@pytest.mark.parametrize("case", CASES)
def test_eval_refuses_crafted_checkpoint(files, tmp_path, case):
    _refused(run_cli(tmp_path, "eval", files["crafted"][case], "--data", files["npz"]), CASES[case][1])


@pytest.mark.parametrize("case", CASES)
def test_compress_refuses_crafted_checkpoint(files, tmp_path, case):
    out = tmp_path / "out.rdk"
    _refused(run_cli(tmp_path, "compress", files["png"], "-m", files["crafted"][case], "-o", out), CASES[case][1])
    assert not out.exists()


@pytest.mark.parametrize("case", ["random-row", "nan-weight"])
def test_decompress_refuses_crafted_checkpoint(files, tmp_path, case):
    out = tmp_path / "out.png"
    _refused(run_cli(tmp_path, "decompress", files["rdk"], "-m", files["crafted"][case], "-o", out), CASES[case][1])
    assert not out.exists()


_API = """
import json, sys
import torch
import rdkit_ae
from rdkit_ae.errors import RdkitError
out = {}
for path in sys.argv[1:]:
    try:
        model, _, _ = rdkit_ae.load_model(path)
        model.compress(torch.rand(1, 3, 32, 32))
        out[path] = "coded"
    except RdkitError as exc:
        out[path] = "error: " + str(exc)
print(json.dumps(out))
"""

_BENCH = """
import json, sys
from rdkit_ae.bench.images import content_hash, load_data
from rdkit_ae.bench.jobs import EvalJob, ImagesRef, JobContext
from rdkit_ae.bench.spec_tables import DataSpec
from rdkit_ae.errors import RdkitError
ds = DataSpec(sys.argv[1])
images = load_data(ds)
ref = ImagesRef(ds, 0.1, 0, content_hash(images), len(images))
out = {}
for i, path in enumerate(sys.argv[2:]):
    job = EvalJob("c", "p", {}, sys.argv[1] + f".run{i}", path, "-", None, None, ref, 4, "cpu", resume=False)
    try:
        job.run(JobContext(images={ref.key: images}))
        out[path] = "coded"
    except RdkitError as exc:
        out[path] = "error: " + str(exc)
print(json.dumps(out))
"""


@pytest.mark.parametrize("where", ["api", "bench"])
def test_python_api_and_bench_job_refuse_crafted_checkpoints(files, where):
    paths = [str(files["good"])] + [str(files["crafted"][c]) for c in CASES]
    args = paths if where == "api" else [str(files["npz"]), *paths]
    proc = run_python(_API if where == "api" else _BENCH, *args, timeout=240)
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome[paths[0]] == "coded"
    for case, (_, fragment) in CASES.items():
        message = outcome[str(files["crafted"][case])]
        assert message.startswith("error: ") and fragment in message and "\n" not in message, (case, message)


def test_loaded_model_is_checked_and_guarded(files):
    """In process: what load_model returns is refused or guarded before the C++ coder sees anything."""
    from rdkit_ae.checkpoint import load_model
    from rdkit_ae.errors import CheckpointError, RdkitError

    for case in REFUSED_AT_LOAD:
        with pytest.raises(CheckpointError, match=CASES[case][1]):
            load_model(files["crafted"][case])
    model, _, _ = load_model(files["crafted"]["huge-bias"])
    with pytest.raises(RdkitError, match="entropy coder"):
        model.compress(torch.rand(1, 3, 32, 32))
