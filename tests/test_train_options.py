"""TrainOptions: one place for every run option, with one-line errors for bad values (API and CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.errors import RdkitError
from rdkit_ae.training import TrainOptions, train

BAD = [
    ({"epochs": 0}, "--epochs must be a positive integer"),
    ({"max_steps": -3}, "--max-steps must be a positive integer"),
    ({"limit_train": 1.5}, "--limit-train must be a positive integer"),
    ({"limit_val": True}, "--limit-val must be a positive integer"),
    ({"time_budget": -1}, "--time-budget must be a positive number"),
    ({"time_budget": 0}, "--time-budget must be a positive number"),
    ({"threads": -2}, "--threads must be a positive integer"),
    ({"workers": -1}, "--workers must be 0 or more"),
    ({"val_fraction": 1.0}, "--val-fraction must be between 0 and 1"),
    ({"seed": "x"}, "--seed must be an integer"),
    ({"device": ""}, "--device must be"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(RdkitError) as info:
        TrainOptions(recipe="conv-mse", **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_train_api_checks_before_creating_anything(tmp_path):
    with pytest.raises(RdkitError, match="--threads"):
        train("conv-mse", "d.npz", tmp_path / "never", threads=-1)
    assert not (tmp_path / "never").exists()


def test_values_are_normalised_and_frozen():
    o = TrainOptions(recipe="conv-mse", data=Path("x.npz"), out="runs/a", resume="runs/a", overrides=["a=1"], threads=0)
    assert o.data == "x.npz" and o.out == Path("runs/a") and o.resume == Path("runs/a") and o.overrides == ("a=1",)
    with pytest.raises(AttributeError):
        o.epochs = 3  # type: ignore[misc]


def test_cli_reports_bad_values_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["train", "-r", "conv-mse", "--threads", "-1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "error: --threads must be a positive integer (0: torch's default), got -1"
    ]
    assert not (tmp_path / "o").exists()


def test_train_takes_the_dataclass_fields_and_nothing_else(tmp_path):
    with pytest.raises(TypeError, match="unknown option 'epoch'; did you mean 'epochs'"):
        train("conv-mse", "d.npz", tmp_path / "never", epoch=3)
    with pytest.raises(TypeError, match="at most 3 positional"):
        train("conv-mse", "d.npz", tmp_path / "never", 3)
    with pytest.raises(TypeError, match="'data' both by position and by name"):
        train("conv-mse", "d.npz", data="e.npz")
    assert not (tmp_path / "never").exists()
    o = TrainOptions.from_args("conv-mse", "d.npz", "runs/x", epochs=2)
    assert (o.recipe, o.data, o.out, o.epochs, o.device) == ("conv-mse", "d.npz", Path("runs/x"), 2, "auto")


def test_every_option_is_a_cli_flag_named_as_its_field():
    """The CLI's parameters are the dataclass's fields (``--set`` -> overrides, ``--no-eval`` -> evaluate)."""
    import dataclasses

    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    renamed = {"set_": "overrides", "no_eval": "evaluate"}
    params = {renamed.get(p.name, p.name) for p in command.params}
    assert params == {f.name for f in dataclasses.fields(TrainOptions)}
    # options not given are left to the dataclass: its defaults are the only ones
    defaults = {p.name: p.default for p in command.params}
    assert all(defaults[name] is None for name in ("data", "val_fraction", "device", "workers", "epochs"))
