"""--fit-schedule: the plan (epochs, cosine horizon) sized to the time budget from the measured pace.

The pace is measured on a simulated clock (a fixed number of seconds per
step), so the plan these tests expect is exact whatever the machine's load.
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import FAST, TINY_CONV, make_npz

import rdkit_ae.training.fit_schedule as fit
from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import RdkitError
from rdkit_ae.recipe import Recipe
from rdkit_ae.training import Callback, TrainOptions, train
from rdkit_ae.training.fit_schedule import FitSchedule, planned_epochs

STEP_S = 10.0  # simulated seconds per optimiser step
STEP_SCHEDULE = [*TINY_CONV, "train.schedule_interval=step"]


class SimulatedClock(Callback):
    """Advances the fit-schedule clock by STEP_S per step (runs before it: user callbacks come first)."""

    def __init__(self, now: list[float]):
        self.now = now

    def on_step_end(self, ctx):
        self.now[0] += STEP_S


@pytest.fixture
def simulated(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fit, "clock", lambda: now[0])
    return SimulatedClock(now)


@pytest.fixture
def npz(tmp_path):
    return make_npz(tmp_path / "d.npz", n=40)  # 36 training images: 5 steps of 8 per epoch


def test_planned_epochs_fills_the_budget_left():
    # 600 s budget, 5% margin: 570 s; 100 s spent on 2 epochs of 50 s: 9 more fit (470 / 50 = 9.4)
    assert planned_epochs(600, 100, 2, 50) == 11
    assert planned_epochs(600, 100, 2, 50, margin=0.0) == 12
    # mid-epoch (2.4 epochs done): whole epochs, the one in progress included
    assert planned_epochs(600, 120, 2.4, 50) == 11
    # the budget is spent already: the plan is what is done, the epoch in progress included, at least 1
    assert planned_epochs(60, 100, 2, 50) == 2
    assert planned_epochs(60, 100, 2.5, 50) == 3
    assert planned_epochs(60, 100, 0, 50) == 1


def test_the_cosine_schedule_ends_within_the_budget(tmp_path, npz, simulated):
    # 10 min, 50 s epochs: the first epoch ends at 50 s, a second would end past 10% of the budget (60 s),
    # so the plan is made there from the first epoch: 1 + floor((570 - 50) / 50) = 11 epochs.
    res = train(
        "conv-mse",
        npz,
        tmp_path / "run",
        overrides=STEP_SCHEDULE,
        time_budget=10,
        fit_schedule=True,
        evaluate=False,
        callbacks=[simulated],
        **FAST,
    )
    assert res.stopped == "completed" and res.epochs == 11 and res.steps == 55
    assert Recipe.from_toml((tmp_path / "run" / "recipe.toml").read_text(), "r", "r").train["epochs"] == 11
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    assert Recipe.from_toml(payload["recipe"], "r", "r").train["epochs"] == 11  # a resume keeps the plan
    assert payload["scheduler"]["horizon"] == 55 and payload["scheduler"]["t"] == 55  # the cosine ran to its end
    assert res.metrics[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    state = payload["callbacks"]["fit-schedule"]
    assert state["planned_epochs"] == 11 and state["measured_from"] == "epoch" and state["epoch_s"] == 50.0


def test_without_fit_schedule_the_budget_only_cuts_the_plan_short(tmp_path, npz):
    res = train("conv-mse", npz, tmp_path / "run", overrides=STEP_SCHEDULE, epochs=3, evaluate=False, **FAST)
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "fit-schedule" not in payload.get("callbacks", {}) and res.epochs == 3


def test_a_second_epoch_is_waited_for_when_it_is_cheap(tmp_path, npz, monkeypatch):
    # 1 s per step, a 2-minute budget: two 5 s epochs end before 10% of it (12 s), so the second one's time
    # decides: 2 + floor((114 - 10) / 5) = 22 epochs.
    now = [0.0]
    monkeypatch.setattr(fit, "clock", lambda: now[0])

    class Tick(Callback):
        def on_step_end(self, ctx):
            now[0] += 1.0

    cb = FitSchedule(2)
    res = train(
        "conv-mse", npz, tmp_path / "run", overrides=STEP_SCHEDULE, evaluate=False, callbacks=[Tick(), cb], **FAST
    )
    assert cb.planned == 22 and cb.pace["measured_from"] == "epoch" and cb.pace["at_epoch"] == 2.0
    assert res.epochs == 22 and res.stopped == "completed"


def test_long_epochs_are_planned_from_the_step_rate(tmp_path, npz, simulated):
    # 5 steps of 10 s per epoch and a 3-minute budget: after 2 start-up steps and a 2-step probe (step 4)
    # the first epoch would end at 50 s, past 10% of the budget: decide now from the rate,
    # 0.8 epochs done + floor of (171 - 40) / 50 = 2.62 more -> 3 epochs.
    cb = FitSchedule(3, probe_steps=2)
    res = train(
        "conv-mse", npz, tmp_path / "run", overrides=STEP_SCHEDULE, evaluate=False, callbacks=[simulated, cb], **FAST
    )
    assert cb.pace["measured_from"] == "steps" and cb.pace["step_s"] == STEP_S and cb.planned == 3
    assert res.epochs == 3 and res.steps == 15


def test_a_resumed_run_keeps_its_plan_and_ends_as_an_uninterrupted_one(tmp_path, npz, simulated):
    args = dict(overrides=STEP_SCHEDULE, evaluate=False, time_budget=10, fit_schedule=True, **FAST)
    whole = train("conv-mse", npz, tmp_path / "whole", callbacks=[simulated], **args)
    simulated.now[0] = 0.0
    cut = train("conv-mse", npz, tmp_path / "cut", max_steps=12, callbacks=[simulated], **args)
    assert cut.stopped == "max_steps"
    # No --fit-schedule on resume: the plan is the stored recipe's.
    resumed = train(resume=tmp_path / "cut", callbacks=[simulated], evaluate=False, **FAST)
    assert resumed.stopped == "completed" and resumed.epochs == whole.epochs == 11 and resumed.steps == 55
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"fit_schedule": True}, "--fit-schedule sizes the plan to --time-budget"),
        ({"fit_schedule": True, "time_budget": 5, "epochs": 3}, "--fit-schedule sets the planned epochs"),
        ({"fit_schedule": "yes", "time_budget": 5}, "--fit-schedule is a switch"),
    ],
)
def test_fit_schedule_needs_a_budget_and_no_epochs(kwargs, message):
    with pytest.raises(RdkitError, match=message):
        TrainOptions(recipe="conv-mse", **kwargs)
