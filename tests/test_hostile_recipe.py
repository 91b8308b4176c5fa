"""Issue #12, recipes and models: hostile --set values give one `error:` line, never a traceback."""

from __future__ import annotations

import pytest
import torch
from test_hostile_support import assert_cheap, assert_one_line_error, run_cli
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.errors import PluginError, RecipeError
from rdkit_ae.model import build_model, build_objective, plan_model
from rdkit_ae.recipe import load_recipe

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), terminal_width=250, env={"COLUMNS": "250"})


def one_line(res, *fragments: str) -> str:
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("loss.mse.bogus=1", ["loss 'mse' has no parameter 'bogus'"]),
        ("loss.0.win_size=3", ["loss 'mse' has no parameter 'win_size'"]),
        ("loss.mse.weight=nan", ["weight must be a finite number", "nan"]),
        ("train.seed=-1", ["'seed' must be at least 0 and less than 4294967296", "got -1"]),
        ("train.seed=4294967296", ["'seed'", "got 4294967296"]),
        ("train.optimizer.weight_decay=-1", ["[train.optimizer] 'weight_decay' must be at least 0", "got -1.0"]),
        ("train.optimizer.lr=nan", ["'lr' must be greater than 0 and at most 10", "got nan"]),
        ("train.optimizer.lr=inf", ["'lr'", "got inf"]),
        ("train.optimizer.lr=1e300", ["'lr'", "got 1e+300"]),
        ("train.optimizer.lr=0", ["'lr' must be greater than 0"]),
        ("train.optimizer.momentum=-0.5", ["'momentum' must be at least 0 and at most 1"]),
        ("train.optimizer.betas=[0.9, nan]", ["'betas' must be two numbers in [0, 1)"]),
        ("train.aux_lr=-1", ["[train] 'aux_lr' must be greater than 0", "got -1.0"]),
        ("train.aux_lr=nan", ["'aux_lr'", "got nan"]),
        ("train.clip_grad=-1", ["'clip_grad' must be at least 0", "got -1.0"]),
        ("train.clip_grad=inf", ["'clip_grad'", "got inf"]),
        ("train.batch_size=0", ["'batch_size' must be at least 1"]),
        ("train.batch_size=100000000", ["'batch_size' must be at least 1 and at most 65536"]),
        ("train.epochs=0", ["'epochs' must be at least 1"]),
        ("train.crop_size=-4", ["'crop_size' must be at least 1"]),
        ("train.augment.color_jitter=nan", ["'color_jitter'", "got nan"]),
        ("train.schedule_interval=batch", ["schedule_interval 'batch' is not one of: epoch, step"]),
    ],
)
def test_bad_values_are_one_line_at_recipe_load(override, fragments):
    with pytest.raises(RecipeError) as info:
        load_recipe("conv-mse", [override])
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)
    one_line(cli("recipes", "show", "conv-mse", "--set", override), *fragments)


def test_bounds_themselves_are_accepted():
    r = load_recipe(
        "conv-mse",
        ["train.seed=4294967295", "train.optimizer.lr=10", "train.optimizer.weight_decay=0", "train.clip_grad=0"],
    )
    assert (r.train["seed"], r.train["optimizer"]["lr"]) == (4294967295, 10.0)


def test_losses_without_parameters_still_build():
    objective = build_objective(load_recipe("factorized"))
    x = torch.rand(2, 3, 8, 8)
    total, terms = objective(x, {"x_hat": x * 0.5, "likelihoods": {"y": torch.full((2, 4, 1, 1), 0.5)}})
    assert sorted(objective.names) == sorted(terms) == ["mse", "rate"]
    assert torch.isclose(terms["mse"], ((x * 0.5 - x) ** 2).mean())


@pytest.mark.parametrize(
    "recipe, overrides, fragments",
    [
        ("conv-mse", ["decoder.channels=[8]"], ["does not fit encoder 'conv'", "stride 8 (encoder) vs 2"]),
        ("conv-mse", ["decoder.latent_channels=8"], ["latent channels 16 (encoder) vs 8 (decoder)"]),
        ("factorized", ["decoder.M=100"], ["decoder 'gdn' does not fit encoder 'gdn'"]),
        ("hyperprior", ["quantizer.channels=7"], ["quantizer channels 7"]),
    ],
)
def test_decoder_that_does_not_fit_is_refused_at_build(recipe, overrides, fragments):
    with pytest.raises(RecipeError) as info:
        build_model(recipe, overrides)
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    "recipe, override, fragment",
    [
        ("hyperprior", "encoder.stages=40", "stages must be in 1..8; got 40"),
        ("hyperprior", "decoder.stages=40", "stages must be in 1..8; got 40"),
        ("conv-mse", "encoder.channels=[4, 4, 4, 4, 4, 4, 4, 4, 4, 4]", "at most 8 are allowed"),
        ("hyperprior", "quantizer.hyper_stages=30", "hyper_stages must be in 1..4; got 30"),
        ("mbt2018-mean", "quantizer.hyper_stages=30", "hyper_stages must be in 1..4; got 30"),
    ],
)
def test_absurd_stage_counts_are_refused(recipe, override, fragment):
    with pytest.raises(PluginError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        build_model(recipe, [override])


def test_total_stride_is_bounded():
    with pytest.raises(RecipeError, match="total stride 4096 exceeds 1024"):
        build_model("hyperprior", ["encoder.stages=8", "quantizer.hyper_stages=4"])


def test_plan_counts_parameters_without_allocating_and_matches_the_real_model():
    recipe = load_recipe("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"])
    shapes = plan_model(recipe)
    model = build_model(recipe)
    assert shapes == {name: tuple(p.shape) for name, p in model.named_parameters()}
    # The plan draws no random numbers: building after it gives the same weights as building alone.
    torch.manual_seed(5)
    a = build_model(recipe).state_dict()
    torch.manual_seed(5)
    from rdkit_ae.model import assemble_model

    b = assemble_model(recipe).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_parameter_limit_is_configurable(monkeypatch):
    recipe = load_recipe("conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=4"])
    count = sum(p.numel() for p in build_model(recipe).parameters())
    with pytest.raises(RecipeError, match=f"would have {count:,} parameters, more than the limit of {count - 1:,}"):
        build_model(recipe, max_params=count - 1)
    monkeypatch.setenv("RDKIT_MAX_PARAMS", str(count - 1))
    with pytest.raises(RecipeError, match="RDKIT_MAX_PARAMS"):
        build_model(recipe)
    monkeypatch.setenv("RDKIT_MAX_PARAMS", str(count))
    assert build_model(recipe).stride == 4


# -- the same through the real CLI, in a child process ---------------------------------------------
@pytest.mark.parametrize(
    "recipe, override, fragment",
    [
        ("conv-mse", "decoder.channels=[8]", "does not fit encoder"),
        ("hyperprior", "encoder.stages=40", "stages must be in 1..8"),
        ("hyperprior", "quantizer.hyper_stages=30", "hyper_stages must be in 1..4"),
        ("bmshj2018-hyperprior", "encoder.N=6000", "more than the limit of 200,000,000"),
    ],
)
def test_cli_info_refuses_bad_models_in_one_line(tmp_path, recipe, override, fragment):
    run = run_cli(tmp_path, "info", recipe, "--set", override)
    assert_one_line_error(run, fragment)
    assert_cheap(run)  # N=6000 would allocate 15 GB of weights


def test_cli_train_refuses_nan_lr_and_misfit_decoder_before_training(tmp_path):
    import numpy as np

    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((8, 16, 16, 3), np.uint8))
    for override, fragment in [("train.optimizer.lr=nan", "'lr'"), ("decoder.channels=[8]", "does not fit")]:
        run = run_cli(tmp_path, "train", "-r", "conv-mse", "-d", npz, "-o", tmp_path / "run", "--set", override, "-q")
        assert_one_line_error(run, fragment)
