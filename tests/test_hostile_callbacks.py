"""Issue #20, recipe values that gave tracebacks or unbounded output: TensorBoard's log_dir, long lambda lists.

A ``log_dir`` that is an existing file gave a 64-line ``FileExistsError``; an
absolute one wrote outside the run folder without a word; a list of 1,000
lambdas was refused with a 14 KB error line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import FAST, make_npz
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.errors import PluginError
from rdkit_ae.training import train

pytest.importorskip("torch.utils.tensorboard")
runner = CliRunner()


def _recipe(tmp_path: Path, log_dir: str) -> Path:
    path = tmp_path / "tb.toml"
    path.write_text(
        'extends = "factorized"\n[encoder]\nN = 8\nM = 12\n'
        "[train]\nbatch_size = 8\ncrop_size = 16\nepochs = 1\n"
        f"callbacks = [{{ name = \"tensorboard\", log_dir = '{log_dir}', images = 0 }}]\n"
    )
    return path


def _one_line(res) -> str:
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_log_dir_that_is_a_file_is_one_line(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=24)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for log_dir, message in [(str(taken), "exists and is not a folder"), (f"{taken}/tb", "cannot write to log_dir")]:
        args = [
            "train",
            "-r",
            str(_recipe(tmp_path, log_dir)),
            "--data",
            str(npz),
            "--max-steps",
            "1",
            "--threads",
            "1",
        ]
        line = _one_line(runner.invoke(app, [*args, "--out", str(tmp_path / "run"), "--no-eval", "-q"]))
        assert "callback 'tensorboard'" in line and message in line and str(taken) in line, line
    assert taken.read_text() == "not a folder"
    with pytest.raises(PluginError, match="exists and is not a folder"):
        train(_recipe(tmp_path, str(taken)), npz, tmp_path / "api", max_steps=1, **FAST)


@pytest.mark.parametrize("outside", ["absolute", "dotdot"])
def test_a_log_dir_outside_the_run_folder_is_used_and_announced(tmp_path, capsys, outside):
    npz = make_npz(tmp_path / "d.npz", n=24)
    shared = tmp_path / "all-logs" / "run-a"
    log_dir = str(shared) if outside == "absolute" else "../all-logs/run-a"
    train(_recipe(tmp_path, log_dir), npz, tmp_path / "run", max_steps=1, threads=1, evaluate=False)
    assert list(shared.glob("events.out.tfevents.*"))
    err = capsys.readouterr().err
    assert "note: callback 'tensorboard' writes its event files outside the run folder" in err, err
    # Inside the run folder (the default), nothing is said.
    train(_recipe(tmp_path, "tb"), npz, tmp_path / "run2", max_steps=1, threads=1, evaluate=False)
    assert "outside the run folder" not in capsys.readouterr().err


def test_a_thousand_lambdas_are_refused_in_a_short_line(tmp_path):
    recipe = tmp_path / "vr.toml"
    values = ", ".join(f"{0.001 * (i + 1):.3f}" for i in range(1000))
    recipe.write_text(f'extends = "fast-vr"\n[quantizer]\nlambdas = [{values}]\n')
    line = _one_line(runner.invoke(app, ["info", str(recipe)]))
    assert "lambdas must be a list of 2..64 numbers; got 1000 values [0.001, 0.002, ..., 1.0]" in line, line
    assert len(line) < 400
    decreasing = ", ".join(f"{0.001 * (60 - i):.3f}" for i in range(60))
    recipe.write_text(f'extends = "fast-vr"\n[quantizer]\nlambdas = [{decreasing}]\n')
    line = _one_line(runner.invoke(app, ["info", str(recipe)]))
    assert "must increase strictly; got 60 values [0.06, 0.059, ..., 0.001]" in line and len(line) < 400, line
