"""Every trained operating point of a checkpoint: the library API (points=None) and ``rdkit eval --rate all``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from test_variable_rate import LAMBDAS, tiny_model
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.data.sources import ImageSet
from rdkit_ae.evaluation import evaluate_operating_points
from rdkit_ae.evaluation.evaluator import trained_operating_points
from rdkit_ae.model import build_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("points")
    vr = tiny_model()
    vr.eval().update(force=True)
    save_checkpoint(folder / "vr.pt", vr, vr.recipe)
    torch.manual_seed(0)
    fixed = build_model("conv-mse", ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4"])
    fixed.eval().update(force=True)
    save_checkpoint(folder / "fixed.pt", fixed, fixed.recipe)
    return folder / "vr.pt", folder / "fixed.pt", vr, fixed


def test_trained_points_are_each_lambda_or_the_model_as_it_is(checkpoints):
    _, _, vr, fixed = checkpoints
    assert trained_operating_points(vr) == [(None, float(i)) for i in range(len(LAMBDAS))]
    assert trained_operating_points(fixed) == [(None, None)]


def test_evaluate_operating_points_defaults_to_every_trained_point(checkpoints):
    vr_path, fixed_path, _, _ = checkpoints
    images = ImageSet("tiny", array=smooth_images(2, 32, 32, seed=1))
    results = evaluate_operating_points(vr_path, images, check_exact=False)
    assert [r.meta["rate"] for r in results] == list(range(len(LAMBDAS)))
    assert [r.meta["lambda"] for r in results] == pytest.approx(LAMBDAS)
    bpp = [r.summary["container_bpp"] for r in results]
    assert bpp == sorted(bpp)
    (only,) = evaluate_operating_points(fixed_path, images)
    assert "rate" not in only.meta


def test_cli_eval_rate_all(tmp_path, checkpoints):
    vr_path, fixed_path, _, _ = checkpoints
    npz = tmp_path / "d.npz"
    np.savez(npz, x=smooth_images(2, 32, 32, seed=4))
    out = tmp_path / "curve.json"
    res = CliRunner().invoke(
        app, ["eval", str(vr_path), str(fixed_path), "--data", str(npz), "--rate", "all", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())["results"]
    assert len(results["bpp"]) == len(LAMBDAS) + 1  # six points of the variable-rate model, one of the fixed
