"""`rdkit bench` end to end with the real trainer (rdkit_ae.training.train), tiny budgets."""

import json

import numpy as np
import pytest
from synthetic import smooth_images
from typer.testing import CliRunner

import rdkit_ae.training.run as train_mod  # noqa: E402
from rdkit_ae.bench import run_sweep

SPEC = """
name = "tiny"
anchor = "WebP"
[data]
train = { path = "d.npz", stop = 48 }
eval = { path = "d.npz", start = 48 }
[budget]
epochs = 2
max_steps = 2
limit_val = 8
[[model]]
recipe = "conv-mse"
set = ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4", "train.batch_size=16"]
grid = { "quantizer.bits" = [2, 8] }
[[model]]
recipe = "factorized"
name = "fact"
set = ["encoder.N=8", "encoder.M=8", "train.batch_size=16"]
[classical]
webp = [10, 40, 70, 90]
"""


@pytest.fixture()
def spec(tmp_path):
    np.savez(tmp_path / "d.npz", x=smooth_images(60))
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def test_cli_smoke_sweep_with_real_training(tmp_path, spec):
    from rdkit_ae.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained 3 point(s)" in result.output
    entries = {e["name"]: e for e in json.loads((out / "results.json").read_text())}
    assert set(entries) == {"WebP", "conv-mse", "fact"}
    assert entries["conv-mse"]["results"]["bpp"] == [0.125, 0.5]  # 4x4x4 latent at 2 and 8 bits
    assert len(entries["fact"]["results"]["bpp"]) == 1
    for run in (out / "runs").iterdir():
        done = json.loads((run / "done.json").read_text())
        assert done["steps"] == 2 and done["stopped"] == "max_steps"
        assert (run / "train" / "recipe.toml").is_file() and (run / "train" / "metrics.jsonl").is_file()
        assert len(list(run.glob("eval-*.json"))) == 1
    for name in ("results.csv", "rd.png", "bd_rate.md", "bd_rate.json", "sweep.json"):
        assert (out / name).is_file()

    again = CliRunner().invoke(app, ["bench", str(spec), "--out", str(out)])
    assert again.exit_code == 0 and "trained 0 point(s)" in again.output and again.output.count("cached") >= 6


def test_resume_continues_an_interrupted_real_training(tmp_path, spec):
    """A sweep killed in the middle of a training continues that training from its last.pt."""
    calls = []

    def killed_during_second(recipe, **kw):
        calls.append(kw.get("resume"))
        if len(calls) == 2:
            # One step of the two, then a crash: last.pt exists, the trainer's
            # closing run.json does not.
            train_mod.train(recipe, **{**kw, "max_steps": 1})
            (kw["out"] / "run.json").unlink()
            raise KeyboardInterrupt
        return train_mod.train(recipe, **kw)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, train_fn=killed_during_second)
    assert len(list((out / "runs").glob("*/done.json"))) == 1

    resumed = []

    def counting(recipe, **kw):
        resumed.append((recipe, kw.get("resume")))
        return train_mod.train(recipe, **kw)

    res = run_sweep(spec, out, train_fn=counting)
    # Point 1 from the cache; point 2 resumed from its own last.pt (recipe None)
    # and went on to the budget's 2 steps; point 3 trained from scratch.
    assert len(resumed) == 2 and res.trained == 2
    assert resumed[0][0] is None and resumed[0][1] is not None and resumed[0][1].name == "train"
    done = json.loads((resumed[0][1].parent / "done.json").read_text())
    assert done["steps"] == 2 and done["stopped"] == "max_steps"
    assert resumed[1][0] is not None and resumed[1][1] is None
    assert sorted(p.cached for c in ("conv-mse", "fact") for p in res.curves[c]["points"]) == [False, False, True]


def test_a_finished_but_unrecorded_training_is_taken_as_it_is(tmp_path, spec):
    calls = []

    def killed_after_second(recipe, **kw):
        calls.append(recipe)
        result = train_mod.train(recipe, **kw)
        if len(calls) == 2:
            raise KeyboardInterrupt  # between the trainer's end and the sweep's bookkeeping
        return result

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, train_fn=killed_after_second)
    again = []
    res = run_sweep(spec, out, train_fn=lambda recipe, **kw: again.append(recipe) or train_mod.train(recipe, **kw))
    assert len(again) == 1 and res.trained == 1  # only the third point trains
    assert len(list((out / "runs").glob("*/done.json"))) == 3


def test_a_training_cut_short_after_its_last_step_is_not_trained_again(tmp_path, spec):
    """Killed after the last step's checkpoint but before run.json: the rerun takes last.pt as it is."""
    calls = []

    def killed_while_finishing(recipe, **kw):
        calls.append(recipe)
        result = train_mod.train(recipe, **kw)
        if len(calls) == 2:
            (kw["out"] / "run.json").unlink()  # as if killed before the trainer's last write
            raise KeyboardInterrupt
        return result

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, train_fn=killed_while_finishing)
    runs = list((out / "runs").iterdir())
    cut = [p for p in runs if (p / "train" / "last.pt").is_file() and not (p / "done.json").exists()]
    assert len(cut) == 1 and not (cut[0] / "train" / "run.json").exists()

    again = []

    def counting(recipe, **kw):
        again.append((recipe, kw.get("resume")))
        return train_mod.train(recipe, **kw)

    res = run_sweep(spec, out, train_fn=counting)
    assert len(again) == 1 and again[0][1] is None and res.trained == 1  # only the third point trains
    done = json.loads((cut[0] / "done.json").read_text())
    assert done["steps"] == 2 and done["stopped"] == "max_steps" and done["train_seconds"] is None
    assert len(list(cut[0].glob("eval-*.json"))) == 1
    assert sorted(p.cached for c in ("conv-mse", "fact") for p in res.curves[c]["points"]) == [False, False, True]
