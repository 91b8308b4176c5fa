"""Two CPU processes under torchrun (gloo): training completes, resumes, and the ranks agree on the weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_helpers import TINY_FACTORIZED, make_npz

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.model import build_model
from rdkit_ae.recipe import Recipe
from rdkit_ae.training.distributed import weights_digest

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")


def _torchrun(args, env, timeout=180):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "rdkit_ae",
        "train",
        *args,
    ]
    env = {**env, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _digest_of(checkpoint):
    payload = load_checkpoint(checkpoint)
    model = build_model(Recipe.from_toml(payload["recipe"]))
    model.load_state_dict(payload["model"])
    return weights_digest(model)


def test_two_processes_train_resume_and_end_with_identical_weights(tmp_path, python_env):
    npz = make_npz(tmp_path / "d.npz", n=40)
    out = tmp_path / "run"
    sets = [a for o in TINY_FACTORIZED for a in ("--set", o)]
    # 36 training images, batch 8 per process: 3 steps per epoch; stop inside epoch 2
    first = _torchrun(
        [
            "-r",
            "factorized",
            "--data",
            str(npz),
            *sets,
            "--epochs",
            "2",
            "--max-steps",
            "4",
            "--out",
            str(out),
            "--threads",
            "1",
            "--no-eval",
        ],
        python_env,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "x 2 processes" in first.stdout and first.stdout.count("factorized: max_steps") == 1  # rank 0 prints
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and info["stopped"] == "max_steps"
    assert load_checkpoint(out / "last.pt")["position"] == {
        **load_checkpoint(out / "last.pt")["position"],
        "epoch": 1,
        "batch": 1,
        "step": 4,
    }

    second = _torchrun(["--resume", str(out), "--no-eval"], python_env)
    assert second.returncode == 0, second.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["stopped"] == "completed" and info["steps"] == 6
    # each rank hashed its own weights at the end; rank 0's checkpoint holds the same
    d0, d1 = info["rank_weight_digests"]
    assert d0 == d1 and info["ranks_in_sync"]
    assert _digest_of(out / "last.pt") == d0
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["partial"]) for r in lines] == [(1, False), (2, False)]
