"""`rdkit bench`: spec parsing, caching, resume, reports (with a stand-in trainer).

The end-to-end sweep with the real trainer is in test_bench_smoke.py; here a
small function that builds the model and takes a few real optimiser steps
stands in for it, so the sweep's own logic is tested quickly.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from typer.testing import CliRunner

from rdkit_ae.bench import SpecError, load_spec, run_sweep
from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.model import build_model, build_objective

TINY_CONV = '["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4"]'


def write_spec(tmp_path, body, name="spec.toml"):
    path = tmp_path / name
    path.write_text(body)
    return path


SPEC = """
name = "t"
anchor = "WebP"
[data]
train = {{ path = "data/d.npz", stop = 24 }}
eval = {{ path = "data/d.npz", start = -12 }}
[budget]
max_steps = 3
[[model]]
recipe = "conv-mse"
set = {tiny}
grid = {{ "quantizer.bits" = [2, 4, 8] }}
[classical]
webp = [0, 20, 50, 80]
jpeg = [20, 80]
"""


class StandInTrainer:
    """Builds the recipe's model, takes ``max_steps`` real Adam steps, saves a checkpoint."""

    def __init__(self, fail_on_call=None):
        self.calls = []
        self.fail_on_call = fail_on_call

    def __call__(self, recipe, *, data, out, overrides, seed, quiet, evaluate, **budget):
        self.calls.append({"recipe": recipe, "data": data, "out": out, "budget": budget})
        if self.fail_on_call == len(self.calls):
            out.mkdir(parents=True, exist_ok=True)
            (out / "partial").write_text("interrupted here")
            raise KeyboardInterrupt
        torch.manual_seed(seed)
        model = build_model(recipe)
        objective = build_objective(recipe)
        with np.load(data) as f:
            x = torch.from_numpy(f["x"][:16]).permute(0, 3, 1, 2).float() / 255
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(budget.get("max_steps", 1)):
            opt.zero_grad()
            objective(x, model(x))[0].backward()
            opt.step()
        model.eval()
        model.update(force=True)
        save_checkpoint(out / "last.pt", model, recipe)
        return SimpleNamespace(out_dir=out, best_checkpoint=None, last_checkpoint=out / "last.pt")


def test_spec_grid_points_paths_and_budget(tmp_path, data):
    spec = load_spec(
        write_spec(
            tmp_path,
            SPEC.format(tiny=TINY_CONV)
            + """
[[model]]
recipe = "factorized"
name = "fact"
budget = { time_budget = 0.5 }
points = [{ "loss.rate.weight" = 0.01, "encoder.N" = 8 }, { "loss.rate.weight" = 0.1, "encoder.N" = 8 }]
""",
        )
    )
    assert [m.name for m in spec.models] == ["conv-mse", "fact"]
    conv, fact = spec.models
    assert [p.label for p in conv.points] == ["quantizer.bits=2", "quantizer.bits=4", "quantizer.bits=8"]
    assert [p.recipe["quantizer"]["bits"] for p in conv.points] == [2, 4, 8]
    assert all(p.recipe["encoder"]["latent_channels"] == 4 for p in conv.points)  # `set` applies to every point
    assert fact.points[1].recipe.losses[1] == {"name": "rate", "weight": 0.1}
    assert fact.points[0].budget == {"max_steps": 3, "time_budget": 0.5} and conv.points[0].budget == {"max_steps": 3}
    assert spec.train_data.path == str(data.resolve()) and spec.train_data.stop == 24
    assert spec.eval_data.start == -12
    assert spec.curve_names() == ["conv-mse", "fact", "WebP", "JPEG"]


@pytest.mark.parametrize(
    "body,message",
    [
        (
            'name = "x"\n[data]\neval = "data/d.npz"\n[classical]\njpeg = [50]\n',
            "anchor 'WebP' is not one of the curves: JPEG",
        ),
        ('bogus = 1\n[data]\neval = "data/d.npz"\n', "unknown top-level key(s) bogus"),
        ('[data]\neval = "data/d.npz"\n[classical]\nbpg = [1]\n', "unknown codec 'bpg'"),
        (
            '[data]\neval = "data/d.npz"\n[[model]]\nrecipe = "conv-mse"\n[classical]\nwebp = [5]\n',
            "train = <training images> is required",
        ),
        (
            '[data]\neval = "data/d.npz"\ntrain = "data/d.npz"\n[[model]]\nrecipe = "conv-mse"\n'
            'grid = { "quantizer.bits" = [99] }\n'
            "[classical]\nwebp = [5]\n",
            "conv-mse",
        ),
        (
            '[data]\neval = "data/d.npz"\n[budget]\nepochs = -1\n[classical]\nwebp = [5]\n',
            "[budget].epochs must be a positive integer, got -1",
        ),
        (
            '[data]\neval = "data/d.npz"\n[classical]\nwebp = [5]\njpeg = [5]\n'
            '[[external]]\npath = "ext.json"\nname = "JPEG"\n',
            "curve names must be unique; repeated: JPEG",
        ),
        (
            '[data]\neval = "data/d.npz"\n[budget]\nfit_schedule = 1\n[classical]\nwebp = [5]\n',
            "[budget].fit_schedule must be true or false, got 1",
        ),
        (
            '[data]\neval = "data/d.npz"\ntrain = "data/d.npz"\n[budget]\nfit_schedule = true\n'
            '[[model]]\nrecipe = "conv-mse"\n[classical]\nwebp = [5]\n',
            "[[model]] #1 (conv-mse): fit_schedule = true sizes the plan to a time_budget",
        ),
        (
            '[data]\neval = "data/d.npz"\ntrain = "data/d.npz"\n[budget]\nepochs = 3\n[[model]]\n'
            'recipe = "conv-mse"\nbudget = { fit_schedule = true, time_budget = 1 }\n[classical]\nwebp = [5]\n',
            "fit_schedule = true sets the planned epochs: drop epochs",
        ),
        (
            'bd_window = [3, 1]\n[data]\neval = "data/d.npz"\n[classical]\nwebp = [5]\n',
            "bd_window must be [low, high] rates in bpp with 0 <= low < high, got [3, 1]",
        ),
    ],
)
def test_spec_errors_are_one_line(tmp_path, data, body, message):
    (tmp_path / "ext.json").write_text(json.dumps({"name": "e", "results": {"bpp": [1.0], "psnr-rgb": [30.0]}}))
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, body))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_sweep_outputs(tmp_path, data):
    from compressai.utils.plot.__main__ import parse_json_file

    ext = tmp_path / "paper.json"  # an extra curve in CompressAI's own format
    ext.write_text(
        json.dumps(
            {
                "name": "paper",
                "description": "d",
                "results": {
                    "bpp": [0.5, 1.0, 2.0, 4.0],
                    "psnr-rgb": [24.0, 27.0, 30.0, 34.0],
                    "ms-ssim-rgb": [0.9, 0.93, 0.96, 0.98],
                },
            }
        )
    )
    spec = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV) + '[[external]]\npath = "paper.json"\n')
    trainer = StandInTrainer()
    res = run_sweep(spec, tmp_path / "out", train_fn=trainer)
    out = tmp_path / "out"
    assert res.trained == 3 and len(trainer.calls) == 3
    # Training got the materialised first 24 images, the budget and quiet mode.
    with np.load(trainer.calls[0]["data"]) as f:
        assert np.array_equal(f["x"], smooth_images(40)[:24])
    assert trainer.calls[0]["budget"] == {"max_steps": 3}

    entries = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in entries] == ["WebP", "JPEG", "paper", "conv-mse"]
    conv = entries[3]["results"]
    assert conv["bpp"] == [0.125, 0.25, 0.5]  # 4x4x4 latent at 2, 4, 8 bits on 32x32: measured, sorted by bpp
    assert conv["nominal-bpp"] == conv["bpp"]
    for e in entries:
        path = out / "curves" / f"{e['name']}.json"
        parsed = parse_json_file(path, "psnr")
        assert parsed["xs"] == e["results"]["bpp"] and len(parsed["ys"]) == len(parsed["xs"])

    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 + 2 + 4 + 3
    learned = [r for r in rows if r["kind"] == "learned"]
    assert {r["point"] for r in learned} == {"quantizer.bits=2", "quantizer.bits=4", "quantizer.bits=8"}
    assert all(r["n_images"] == "12" and r["run_dir"] and r["checkpoint"].endswith("last.pt") for r in learned)

    bd = json.loads((out / "bd_rate.json").read_text())
    assert bd["anchor"] == "WebP" and set(bd["curves"]) == {"JPEG", "paper", "conv-mse"}
    assert bd["curves"]["JPEG"]["bd_rate"] is not None and bd["curves"]["JPEG"]["method"] == "pchip"
    md = (out / "bd_rate.md").read_text()
    assert "Anchor: **WebP**" in md and "| JPEG | classical | 2 |" in md
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["machine"]["cores"] and meta["machine"]["cpu"] and meta["eval_data"].endswith("d.npz[-12:]")
    # Train [:24] and eval [-12:] of 40 images do not overlap: no warning.
    assert not any("WARNING" in n for n in res.notes)


def test_interrupted_sweep_resumes_without_retraining(tmp_path, data):
    spec = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV))
    out = tmp_path / "out"
    first = StandInTrainer(fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, train_fn=first)
    finished = sorted(p.parent for p in (out / "runs").glob("*/done.json"))
    assert len(first.calls) == 3 and len(finished) == 2
    stamps = {p: (p / "done.json").stat().st_mtime_ns for p in finished}
    evals = {p: sorted(p.glob("eval-*.json")) for p in finished}
    assert all(len(v) == 1 for v in evals.values())
    interrupted = first.calls[2]["out"].parent
    assert (interrupted / "train" / "partial").exists() and not (interrupted / "done.json").exists()

    second = StandInTrainer()
    res = run_sweep(spec, out, train_fn=second)
    # Only the interrupted point trains again; it starts from a clean folder.
    assert len(second.calls) == 1 and res.trained == 1
    assert second.calls[0]["out"].parent == interrupted and not (interrupted / "train" / "partial").exists()
    assert {p: (p / "done.json").stat().st_mtime_ns for p in finished} == stamps
    points = res.curves["conv-mse"]["points"]
    assert sorted(p.cached for p in points) == [False, True, True]
    assert all(p.cached for c in ("WebP", "JPEG") for p in res.curves[c]["points"])

    third = StandInTrainer()
    assert run_sweep(spec, out, train_fn=third).trained == 0 and third.calls == []
    fresh = StandInTrainer()
    assert run_sweep(spec, out, train_fn=fresh, resume=False).trained == 3


def test_changed_budget_or_recipe_means_a_new_run(tmp_path, data):
    out = tmp_path / "out"
    run_sweep(write_spec(tmp_path, SPEC.format(tiny=TINY_CONV)), out, train_fn=StandInTrainer())
    trainer = StandInTrainer()
    changed = SPEC.format(tiny=TINY_CONV).replace("max_steps = 3", "max_steps = 4").replace("[2, 4, 8]", "[2, 4, 6]")
    run_sweep(write_spec(tmp_path, changed, "spec2.toml"), out, train_fn=trainer)
    assert len(trainer.calls) == 3


def test_overlapping_train_and_eval_images_are_flagged(tmp_path, data):
    body = SPEC.format(tiny=TINY_CONV).replace("stop = 24", "stop = 30")
    res = run_sweep(write_spec(tmp_path, body), tmp_path / "out", train_fn=StandInTrainer())
    assert any("WARNING: 2 evaluation image(s) are also training images" in n for n in res.notes)
    assert "WARNING: 2 evaluation" in (tmp_path / "out" / "bd_rate.md").read_text()


def test_cli_bench_classical_only(tmp_path, data):
    from rdkit_ae.cli import app

    spec = write_spec(
        tmp_path,
        '[data]\neval = { path = "data/d.npz", stop = 8 }\n[classical]\nwebp = [10, 40, 70, 90]\njpeg = [30, 60, 90]\n',
    )
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "BD vs WebP" in result.output and "anchor" in result.output
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {
        "results.json",
        "results.csv",
        "rd.png",
        "bd_rate.md",
        "bd_rate.json",
    }
    again = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "o")])
    assert again.exit_code == 0

    missing = runner.invoke(app, ["bench", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1 and missing.output.strip() == f"error: sweep spec not found: {tmp_path / 'nope.toml'}"


def test_a_failing_point_is_reported_and_retried(tmp_path, data):
    from rdkit_ae.errors import RdkitError

    class Diverging(StandInTrainer):
        def __call__(self, recipe, **kw):
            if recipe["quantizer"]["bits"] == 4:
                self.calls.append({"recipe": recipe})
                raise RdkitError("loss became NaN at step 2")
            return super().__call__(recipe, **kw)

    spec = write_spec(tmp_path, SPEC.format(tiny=TINY_CONV))
    res = run_sweep(spec, tmp_path / "out", train_fn=Diverging())
    assert res.failures == ["conv-mse [quantizer.bits=4]: training failed: loss became NaN at step 2"]
    assert [p.label for p in res.curves["conv-mse"]["points"]] == ["quantizer.bits=2", "quantizer.bits=8"]
    assert "FAILED: conv-mse [quantizer.bits=4]" in (tmp_path / "out" / "bd_rate.md").read_text()
    retry = StandInTrainer()
    again = run_sweep(spec, tmp_path / "out", train_fn=retry)
    assert len(retry.calls) == 1 and retry.calls[0]["recipe"]["quantizer"]["bits"] == 4 and not again.failures


def test_env_table_applies_during_training_and_keys_the_cache(tmp_path, data, monkeypatch):
    import os

    monkeypatch.delenv("RDKIT_TEST_WEIGHTS", raising=False)
    seen = []

    class Recording(StandInTrainer):
        def __call__(self, recipe, **kw):
            seen.append(os.environ.get("RDKIT_TEST_WEIGHTS"))
            return super().__call__(recipe, **kw)

    body = SPEC.format(tiny=TINY_CONV) + '[env]\nRDKIT_TEST_WEIGHTS = { path = "data/w.bin" }\n'
    spec = write_spec(tmp_path, body)
    run_sweep(spec, tmp_path / "out", train_fn=Recording())
    assert seen == [str(tmp_path / "data" / "w.bin")] * 3
    assert "RDKIT_TEST_WEIGHTS" not in os.environ  # only for the sweep
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert meta["env"] == {"RDKIT_TEST_WEIGHTS": "data/w.bin"}  # relative to the spec, as written there
    # The user's own setting wins, and other weights mean other runs.
    monkeypatch.setenv("RDKIT_TEST_WEIGHTS", "/elsewhere.bin")
    again = Recording()
    assert run_sweep(spec, tmp_path / "out", train_fn=again).trained == 3
    assert seen[3:] == ["/elsewhere.bin"] * 3


def test_committed_specs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    smoke, full = load_spec(root / "smoke.toml"), load_spec(root / "cifar10-rd.toml")
    assert smoke.anchor == full.anchor == "WebP"
    assert {m.name for m in full.models} == {"conv-mse", "conv-ste", "conv-hybrid", "factorized"}
    # Evaluation images are never training images: [:2500] vs [-500:] of 3,000.
    assert full.train_data.stop == 2500 and full.eval_data.start == -500
    nominal = sorted({build_model(p.recipe).nominal_bits(32, 32) / 1024 for p in full.points if p.curve == "conv-mse"})
    assert nominal[0] == 0.5 and nominal[-1] == 4.0
    assert sum(60 * p.budget.get("time_budget", 1.0) for p in full.points) <= 40 * 60


def test_bd_window_cuts_every_curve_to_the_rates_of_interest(tmp_path, data):
    from rdkit_ae.evaluation.bdrate import bjontegaard

    rates, psnr = [0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], [20.0, 23.0, 26.0, 28.0, 30.0, 32.0, 34.0, 37.0]
    for name, scale in (("a", 1.0), ("b", 0.8)):
        entry = {"name": name, "results": {"bpp": [r * scale for r in rates], "psnr-rgb": psnr}}
        (tmp_path / f"{name}.json").write_text(json.dumps(entry))
    body = 'anchor = "a"\nbd_window = [1, 3]\n[data]\neval = "data/d.npz"\n'
    body += '[[external]]\npath = "a.json"\n[[external]]\npath = "b.json"\n'
    res = run_sweep(write_spec(tmp_path, body), tmp_path / "out")
    assert res.bd["window"] == [1.0, 3.0]
    expected = bjontegaard(rates, psnr, [r * 0.8 for r in rates], psnr, window=(1.0, 3.0))
    assert res.bd["curves"]["b"]["bd_rate"] == pytest.approx(expected.bd_rate) and expected.window == (1.0, 3.0)
    assert res.bd["curves"]["b"]["window"] == [1.0, 3.0]
    assert "Rate window: 1-3 bpp" in (tmp_path / "out" / "bd_rate.md").read_text()
