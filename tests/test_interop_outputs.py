"""What a sweep writes for CompressAI's tools: curves/*.json that ``python -m compressai.utils.plot`` draws,
curve descriptions naming the overrides used, the evaluation padding recorded, the BD interpolation named.

The sweep is real (spec, jobs, evaluation with real bitstreams, reports); a
stand-in trainer takes a few real optimiser steps instead of a full training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from synthetic import smooth_images

from rdkit_ae.bench import run_sweep
from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.model import build_model, build_objective

PNG = b"\x89PNG\r\n\x1a\n"
SPEC = """
name = "outputs"
anchor = "WebP"
[data]
train = {{ path = "d.npz", stop = 16 }}
eval = {{ path = "d.npz", start = -6 }}
[budget]
max_steps = 2
[eval]
pad = "{pad}"
[[model]]
recipe = "factorized"
set = ["encoder.N=8", "encoder.M=12"]
grid = {{ "loss.rate.weight" = [0.001, 0.1] }}
[classical]
webp = [10, 60, 90]
jpeg = [20, 80]
"""


def few_steps(recipe, *, data, out, overrides, seed, quiet, evaluate, **budget):
    torch.manual_seed(seed)
    model, objective = build_model(recipe), build_objective(recipe)
    with np.load(data) as f:
        x = torch.from_numpy(f["x"][:8]).permute(0, 3, 1, 2).float() / 255
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(budget["max_steps"]):
        opt.zero_grad()
        objective(x, model(x))[0].backward()
        opt.step()
    model.eval()
    model.update(force=True)
    save_checkpoint(out / "last.pt", model, recipe)
    return SimpleNamespace(out_dir=out, best_checkpoint=None, last_checkpoint=out / "last.pt")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    np.savez(root / "d.npz", x=smooth_images(22, 40, 48))  # 40x48: padding needed for a stride of 16 and 64
    (root / "spec.toml").write_text(SPEC.format(pad="compressai"))
    return run_sweep(root / "spec.toml", root / "out", train_fn=few_steps)


def _plot(files, out, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "compressai.utils.plot", "-f", *map(str, files), "-o", str(out)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_compressai_plot_draws_the_curve_files(sweep, tmp_path):
    curves = sorted((sweep.out_dir / "curves").glob("*.json"))
    assert [p.stem for p in curves] == ["JPEG", "WebP", "factorized"]
    run = _plot(curves, tmp_path / "rd.png", sweep.out_dir)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "rd.png").read_bytes()[:8] == PNG
    # results.json holds every curve in one list, which the plot tool (one curve per file) cannot read
    assert isinstance(json.loads((sweep.out_dir / "results.json").read_text()), list)


def test_learned_curve_description_names_the_overrides(sweep):
    entry = json.loads((sweep.out_dir / "curves" / "factorized.json").read_text())
    desc = entry["description"]
    assert desc.startswith("factorized [encoder.N=8, encoder.M=12]; per point: loss.rate.weight; base recipe: ")
    assert entry["padding"] == "compressai" and len(entry["results"]["bpp"]) == 2
    webp = json.loads((sweep.out_dir / "curves" / "WebP.json").read_text())
    assert "padding" not in webp and "N=" not in webp["description"]
    listed = {e["name"]: e for e in json.loads((sweep.out_dir / "results.json").read_text())}
    assert listed["factorized"] == entry


def test_padding_and_bd_method_are_recorded(sweep):
    info = json.loads((sweep.out_dir / "sweep.json").read_text())
    assert info["eval_pad"] == "compressai"
    stored = [json.loads(p.read_text()) for p in (sweep.out_dir / "runs").glob("*/eval-*.json")]
    assert len(stored) == 2 and all(s["meta"]["pad"] == "compressai" for s in stored)
    bd = json.loads((sweep.out_dir / "bd_rate.json").read_text())
    assert bd["library"].startswith("bjontegaard ")
    assert bd["curves"]["JPEG"]["method"] == "pchip"  # 2 points: below the cubic fit's 4
    md = (sweep.out_dir / "bd_rate.md").read_text()
    assert "| interpolation |" in md and "| pchip |" in md and "VCEG-M33" in md
