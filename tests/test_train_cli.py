"""`rdkit train` through typer's CliRunner, and for real in a subprocess (Ctrl-C, then resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import FAST, TINY_CONV, make_npz
from typer.testing import CliRunner

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.training import train

RDKIT = Path(sys.executable).with_name("rdkit")


def _set(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_cli_train_resume_and_errors(tmp_path):
    npz = make_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    runner = CliRunner()
    args = [
        "train",
        "-r",
        "conv-mse",
        "--data",
        str(npz),
        *_set(TINY_CONV),
        "--epochs",
        "2",
        "--max-steps",
        "3",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-eval",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "epoch 1/2 (partial)" in res.output and "max_steps" in res.output and "PSNR" in res.output
    assert not (out / "eval.json").exists()
    res = runner.invoke(app, ["train", "--resume", str(out), "--quiet", "--no-eval"])
    assert res.exit_code == 0 and res.output == ""
    assert load_checkpoint(out / "last.pt")["position"]["epoch"] == 2
    res = runner.invoke(
        app, ["train", "-r", "conv-mse", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 1 and res.output.startswith("error: data not found")
    res = runner.invoke(app, ["train", "-r", "conv-mse", "--data", str(npz), "--out", str(out)])
    assert res.exit_code == 1 and "already holds a run" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["train", "--data", str(npz)])
    assert res.exit_code == 1 and "give a recipe" in res.output


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_saves_a_checkpoint_then_resume_continues(tmp_path, python_env):
    npz = make_npz(tmp_path / "d.npz", n=80)
    out = tmp_path / "run"
    cmd = [
        str(RDKIT),
        "train",
        "-r",
        "conv-mse",
        "--data",
        str(npz),
        *_set(TINY_CONV),
        "--epochs",
        "1000",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=python_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    lines = [s for s in stderr.splitlines() if s.strip() and "Warning" not in s and "warnings.warn" not in s]
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGINT)")
    assert f"resume with: rdkit train --resume {out}" in lines[0]
    assert "epoch 1/1000" in stdout  # progress was shown
    pos = load_checkpoint(out / "last.pt")["position"]
    assert pos["step"] >= 9 and not list(out.glob(".*.tmp"))
    # the interrupted run continues (here with a shorter plan so the test ends quickly)
    res = train(None, resume=out, epochs=pos["epoch"] + 1, evaluate=False, **FAST)
    assert res.stopped == "completed" and res.epochs == pos["epoch"] + 1
    assert [r["epoch"] for r in res.metrics] == list(range(1, pos["epoch"] + 2))
    assert json.loads((out / "run.json").read_text())["stopped"] == "completed"
