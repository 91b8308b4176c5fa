"""Issue #20, hostile CompressAI weight files: `rdkit import compressai` checks before it allocates or writes.

Before, a 68 KB file whose ``_quantized_cdf`` claimed 8 x 80M entries through
a zero stride imported with exit 0, peaked at 5.8 GB and wrote a 2.56 GB
checkpoint; a 67 KB file claiming N=2500 made CompressAI build the model
(3.6 GB) before any check; a 2 MB file holding a deflated 2 GB storage record
imported (2.8 GB); quantiles of +-2e6 exhausted memory in ``update()``; NaN
quantiles gave a 60-line traceback; NaN weights and bad tables wrote
checkpoints that ``compress`` refused. Each crafted file is generated here
and imported by the CLI in a child process whose address space is capped, so
a regression fails the test instead of taking the machine's memory.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hostile_weights import (
    ARCH,
    Payload,
    Storage,
    Tensor,
    claims_of,
    deflate,
    legacy_save,
    small_state,
    torch_zip,
    without_tables,
)
from test_hostile_support import REPO, Run, assert_one_line_error, baseline_peak_mb, run_cli
from typer.testing import CliRunner

from rdkit_ae.checkpoint import load_model
from rdkit_ae.cli import app
from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.interop import import_compressai, read_compressai_weights
from rdkit_ae.interop.torch_file import MAX_PICKLE_BYTES, read_claims

EXTRA_MB = 250  # what a refusal may cost beyond `rdkit info` (the bugs cost 2.5 to 6 GB)
ADDRESS_SPACE_MB = 1536  # beyond a valid import's peak address space
VM_PEAK = """
import runpy, sys
sys.argv = ["rdkit", *sys.argv[1:]]
try:
    runpy.run_module("rdkit_ae", run_name="__main__")
finally:
    print(next(ln for ln in open("/proc/self/status") if ln.startswith("VmPeak")), file=sys.stderr)
"""


def _edited(state: dict[str, torch.Tensor], **changes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**state, **{k.replace("__", "."): v for k, v in changes.items()}}


def _quantiles(state, values) -> dict[str, torch.Tensor]:
    q = state["entropy_bottleneck.quantiles"].clone()
    q[:] = torch.tensor(values)
    return _edited(state, entropy_bottleneck__quantiles=q)


def _bomb(path: Path, state) -> Path:
    """A storage record of 2e9 zero bytes, deflated (a 2 MB file), that a real tensor name claims."""
    tensors, records = claims_of(state)
    key = str(len(records))
    storage = Storage(key, "IntStorage", 500_000_000)
    tensors["entropy_bottleneck._quantized_cdf"] = Tensor(storage, (8, 62_500_000), (62_500_000, 1))
    records[key] = 2_000_000_000
    return torch_zip(path, tensors, records, zipfile.ZIP_DEFLATED)


def _wide(path: Path, state) -> Path:
    """N=2500 with honest (deflated) storages: only planning can refuse it before CompressAI builds it."""
    torch.save(
        _edited(state, g_a__0__weight=torch.zeros(2500, 3, 5, 5), g_a__6__weight=torch.zeros(8, 2500, 5, 5)), path
    )
    return deflate(path)


# name -> (builder(path, state), fragments of the one error line)
CHILD_CASES = {
    "zero-stride-cdf": (
        lambda p, s: _save(
            p, _edited(s, entropy_bottleneck___quantized_cdf=torch.zeros(8, 1, dtype=torch.int32).expand(8, 80_000_000))
        ),
        ["'entropy_bottleneck._quantized_cdf'", "claims 640,000,000 numbers from a storage holding 8"],
    ),
    "zero-stride-N2500": (
        lambda p, s: _save(p, _edited(s, g_a__0__weight=torch.zeros(1).expand(2500, 3, 5, 5))),
        ["'g_a.0.weight' of shape (2500, 3, 5, 5)", "zero or overlapping stride"],
    ),
    "planned-N2500": (_wide, ["weights with N=2500, M=8", "parameters, more than the limit of 200,000,000"]),
    "deflate-bomb": (_bomb, ["unpack to 2,000,", "a model with N=8, M=8 may bring"]),
    "huge-quantiles": (
        lambda p, s: _save(p, _quantiles(without_tables(s), [-2e6, 0.0, 2e6])),
        ["'entropy_bottleneck' has non-finite or absurd quantiles"],
    ),
    "nan-quantiles": (
        lambda p, s: _save(p, _quantiles(without_tables(s), [float("nan")] * 3)),
        ["'entropy_bottleneck' has non-finite or absurd quantiles"],
    ),
    "nan-weights": (
        lambda p, s: _save(p, _edited(s, g_s__0__weight=s["g_s.0.weight"].clone().fill_(float("nan")))),
        ["tensor 'g_s.0.weight' holds NaN or infinite values"],
    ),
}


def _save(path: Path, state) -> Path:
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def state():
    return small_state()


@pytest.fixture(scope="module")
def valid(tmp_path_factory, state) -> Path:
    return _save(tmp_path_factory.mktemp("valid") / "valid.pth.tar", state)


@pytest.fixture(scope="module")
def vm_limit_mb(tmp_path_factory, valid) -> float:
    """The child's address-space cap: a valid import's peak address space (torch maps GBs it never touches) + 1.5 GB."""
    tmp = tmp_path_factory.mktemp("vm")
    args = ["import", "compressai", ARCH, "-w", valid, "-o", tmp / "v.pt"]
    run = subprocess.run([sys.executable, "-c", VM_PEAK, *map(str, args)], capture_output=True, text=True, cwd=REPO)
    assert (tmp / "v.pt").is_file(), run.stderr[-2000:]
    kb = int(run.stderr.rsplit("VmPeak:", 1)[1].split()[0])
    return kb / 1024 + ADDRESS_SPACE_MB


def _assert_nothing_written(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".tar") == ["cli.err", "cli.out"]


@pytest.mark.parametrize("name", list(CHILD_CASES))
def test_crafted_weights_are_refused_before_they_allocate(tmp_path, state, vm_limit_mb, name):
    build, fragments = CHILD_CASES[name]
    weights = build(tmp_path / f"{name}.pth.tar", state)
    assert weights.stat().st_size < 2_100_000
    run = run_cli(
        tmp_path, "import", "compressai", ARCH, "-w", weights, "-o", tmp_path / "out.pt", max_vm_mb=vm_limit_mb
    )
    assert_one_line_error(run, str(weights), *fragments)
    _assert_nothing_written(tmp_path)
    assert run.peak_mb < baseline_peak_mb() + EXTRA_MB, (run.peak_mb, baseline_peak_mb())


def test_a_valid_file_imports_under_the_same_cap(tmp_path, valid, vm_limit_mb):
    run: Run = run_cli(
        tmp_path, "import", "compressai", ARCH, "-w", valid, "-o", tmp_path / "ok.pt", max_vm_mb=vm_limit_mb
    )
    assert run.rc == 0, run.stderr[-2000:]
    model, _, payload = load_model(tmp_path / "ok.pt")  # what compress loads: it accepts the checkpoint
    assert payload["imported_from"]["weights"] == str(valid)


# -- refused in this process (cheap files) -------------------------------------------------------------
runner = CliRunner()


def _refused_by_cli(weights: Path, out: Path, *fragments: str) -> str:
    res = runner.invoke(app, ["import", "compressai", ARCH, "-w", str(weights), "-o", str(out)])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return lines[0]


def test_bad_tables_and_infinite_quantiles_write_nothing(tmp_path, state):
    cdf = state["entropy_bottleneck._quantized_cdf"].clone()
    cdf[0, 1] = 0
    offsets = state["entropy_bottleneck._offset"].clone()
    offsets[0] = 1 << 30
    cases = {
        "cdf": (_edited(state, entropy_bottleneck___quantized_cdf=cdf), "CDF tables are not valid"),
        "offsets": (_edited(state, entropy_bottleneck___offset=offsets), "CDF offsets out of range"),
        "inf": (_quantiles(state, [-1.0, 0.0, float("inf")]), "non-finite or absurd quantiles"),
        "neg-inf-nan-weights": (_edited(state, g_a__0__bias=torch.full((8,), -float("inf"))), "'g_a.0.bias' holds NaN"),
    }
    for name, (crafted, fragment) in cases.items():
        _refused_by_cli(_save(tmp_path / f"{name}.pth.tar", crafted), tmp_path / f"{name}.pt", fragment)


def test_pickled_code_is_refused_in_every_format(tmp_path, state):
    marker = tmp_path / "ran"
    payload = {**state, "x": Payload(marker)}
    files = {
        "zip": _save(tmp_path / "zip.pth.tar", payload),
        "legacy": legacy_save(payload, tmp_path / "legacy.pth.tar"),
        "raw pickle": tmp_path / "raw.pth.tar",
    }
    files["raw pickle"].write_bytes(pickle.dumps({"state_dict": {"x": Payload(marker)}}))
    for name, path in files.items():
        line = _refused_by_cli(path, tmp_path / f"{name}.pt", "refused: the file holds pickled objects")
        assert "GLOBAL posix.system" in line or "GLOBAL os.system" in line, (name, line)
    assert not marker.exists()


def test_legacy_format_and_wrapped_files_still_import(tmp_path, state):
    for path in (
        legacy_save(state, tmp_path / "legacy.pth.tar"),
        legacy_save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "l2.pth.tar"),
        _save(tmp_path / "train.pth.tar", {"epoch": 2, "state_dict": state, "optimizer": {"state": {}, "lr": 1e-4}}),
    ):
        model, _ = import_compressai(ARCH, weights=path)
        assert torch.equal(model.state_dict()["g_a.net.0.weight"], state["g_a.0.weight"])


# -- the claims reader on its own -------------------------------------------------------------------------
def test_claims_must_match_what_the_file_holds(tmp_path, state):
    tensors, records = claims_of(state)
    name = "g_a.0.weight"
    key = tensors[name].storage.key
    short = {**records, key: records[key][:-4]}  # one number fewer than claimed
    with pytest.raises(
        CheckpointError, match=f"storage '{key}' claims 2,400 bytes; the archive holds a record of 2,396"
    ):
        read_compressai_weights(torch_zip(tmp_path / "short.pth.tar", tensors, short))
    past = {**tensors, name: Tensor(tensors[name].storage, (8, 3, 5, 5), (75, 25, 5, 1), offset=1)}
    with pytest.raises(CheckpointError, match="reaches past the end of its storage of 600 numbers"):
        read_compressai_weights(torch_zip(tmp_path / "past.pth.tar", past, records))
    huge = tmp_path / "huge-pickle.pth.tar"
    torch_zip(huge, {"pad": "x" * (MAX_PICKLE_BYTES + 1), **tensors}, records)
    with pytest.raises(CheckpointError, match="its pickle is .* bytes, more than the limit"):
        read_compressai_weights(huge)
    assert read_compressai_weights(torch_zip(tmp_path / "ok.pth.tar", tensors, records)).keys() == state.keys()


def test_archives_torch_would_read_differently_are_refused(tmp_path, state):
    path = _save(tmp_path / "w.pth.tar", state)
    # A second data.pkl that differs only in case: torch's zip reader ignores case, so which one it reads is moot.
    with zipfile.ZipFile(path, "a") as zf:
        folder = zf.infolist()[0].filename.split("/")[0]
        zf.writestr(f"{folder}/DATA.pkl", b"")
    with pytest.raises(CheckpointError, match=f"holds '{folder}/DATA.pkl' twice"):
        read_claims(path, 1 << 30)
    # The legacy format: a storage claim larger than the file (torch allocates the claim before reading).
    legacy = legacy_save({"w": torch.zeros(4)}, tmp_path / "legacy.pth.tar")
    data = legacy.read_bytes().replace(b"K\x04Nt", b"J\x00\x00\x00\x10Nt", 1)  # the storage's numel: 4 -> 2**28
    legacy.write_bytes(data)
    with pytest.raises(CheckpointError, match="storages claim 1,073,741,824 bytes; the file holds"):
        read_claims(legacy, 1 << 40)


def test_imported_models_code_behind_the_guarded_coder(tmp_path, state):
    """Finite weights that overflow to infinite latents: the rANS encoder hung on them, unguarded (fuzzing found it)."""
    huge = _edited(state, g_a__6__weight=torch.full_like(state["g_a.6.weight"], 3e38))
    model, _ = import_compressai(ARCH, weights=_save(tmp_path / "huge.pth.tar", huge))
    with pytest.raises(RdkitError, match="NaN, infinite or huge values"):
        model.compress(torch.rand(1, 3, 32, 32))
