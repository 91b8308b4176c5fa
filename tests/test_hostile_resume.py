"""Issue #12, resume: a last.pt with a corrupted training entry is refused in one line, never a traceback.

The weights' digest does not cover the training state (position, RNG
streams, run settings, schedule, loss sums, optimiser), so each entry is
corrupted on its own, written back with ``torch.save``, and resumed through
the CLI in a child process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_hostile_support import assert_one_line_error, run_cli
from train_helpers import FAST, TINY_CONV, make_npz

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import CheckpointError
from rdkit_ae.training import train
from rdkit_ae.training.state import check_training_payload


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    npz = make_npz(root / "d.npz")
    out = root / "run"
    train("conv-mse", data=str(npz), overrides=TINY_CONV, epochs=2, max_steps=3, out=out, evaluate=False, **FAST)
    payload = load_checkpoint(out / "last.pt")
    assert payload["position"]["step"] == 3 and payload["position"]["epoch"] < 2  # an unfinished run
    return out


def _position(p):
    p["position"]["epoch"] = -3


def _position_type(p):
    p["position"] = "epoch 1"


def _rng_torch(p):
    p["rng"]["torch"] = torch.zeros(7)


def _rng_python(p):
    p["rng"]["python"] = [3, [1, 2], None]


def _run(p):
    p["run"] = {"data": 42}


def _scheduler(p):
    p["scheduler"]["t"] = "soon"


def _epoch_acc(p):
    p["epoch_acc"] = torch.tensor([float("nan"), 1.0])


def _optimizer(p):
    p["optimizer"] = {"state": {}, "param_groups": [{"params": [999]}]}


CASES = {
    "position": (_position, "'position'"),
    "position-type": (_position_type, "'position'"),
    "rng-torch": (_rng_torch, "'rng.torch'"),
    "rng-python": (_rng_python, "'rng.python'"),
    "run": (_run, "'run'"),
    "scheduler": (_scheduler, "'scheduler'"),
    "epoch-acc": (_epoch_acc, "'epoch_acc'"),
    "optimizer": (_optimizer, "cannot restore the training state"),
}


def _corrupt(run_dir: Path, dst: Path, edit) -> Path:
    shutil.copytree(run_dir, dst)
    payload = torch.load(dst / "last.pt", weights_only=True)
    edit(payload)
    torch.save(payload, dst / "last.pt")  # the weights are untouched: their digest still matches
    return dst


def test_the_unmodified_run_resumes(run_dir, tmp_path):
    run = run_cli(tmp_path, "train", "--resume", _corrupt(run_dir, tmp_path / "run", lambda p: None), "--quiet")
    assert run.rc == 0, run.stderr[-2000:]


@pytest.mark.parametrize("case", CASES)
def test_corrupted_training_entry_is_one_line(run_dir, tmp_path, case):
    edit, fragment = CASES[case]
    bad = _corrupt(run_dir, tmp_path / "run", edit)
    run = run_cli(tmp_path, "train", "--resume", bad, "--quiet", "--no-eval", timeout=120)
    assert run.rc >= 0, f"killed by signal {-run.rc}"
    assert_one_line_error(run, "last.pt", fragment)


@pytest.mark.parametrize("case", [c for c in CASES if c != "optimizer"])
def test_checks_name_the_entry_without_restoring(run_dir, case):
    payload = torch.load(run_dir / "last.pt", weights_only=True)
    check_training_payload(payload, "ok.pt")
    edit, fragment = CASES[case]
    edit(payload)
    with pytest.raises(CheckpointError, match=fragment.strip("'")) as info:
        check_training_payload(payload, "bad.pt")
    assert "corrupted training state" in str(info.value) and "\n" not in str(info.value)
