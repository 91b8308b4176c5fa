"""Learning-rate schedule: linear warm-up, a cosine floor, their recipe keys and the rates a real run applies."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import FAST, TINY_FACTORIZED, make_npz

from rdkit_ae.errors import RecipeError
from rdkit_ae.recipe import load_recipe
from rdkit_ae.training import Callback, train
from rdkit_ae.training.optim import LRSchedule, build_training


def schedule(**kw) -> LRSchedule:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    return LRSchedule(opt, **{"kind": "cosine", "interval": "step", "horizon": 100, **kw})


def rates(s: LRSchedule, n: int) -> list[float]:
    out = [s.lr]
    for _ in range(n):
        s.step()
        out.append(s.lr)
    return out


def test_warmup_then_cosine_to_the_floor():
    lr = rates(schedule(warmup=10, min_factor=0.1), 120)
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100)) for t in range(121)]
    expected = [2e-3 * c * min(1.0, (t + 1) / 10) for t, c in enumerate(cosine)]
    assert lr == pytest.approx(expected, rel=1e-12)
    assert lr[0] == pytest.approx(2e-4) and lr[9] == pytest.approx(2e-3 * cosine[9])
    assert lr[100] == pytest.approx(2e-4) and lr[120] == pytest.approx(2e-4)  # the floor, not 0


def test_defaults_are_the_plain_cosine_and_constant():
    assert rates(schedule(), 100)[-1] == 0.0
    assert rates(schedule(), 50)[-1] == pytest.approx(1e-3)
    lr = rates(schedule(kind="constant", warmup=4), 6)
    assert lr == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3, 2e-3, 2e-3, 2e-3])


def test_resume_continues_the_warmup():
    a = schedule(warmup=20, min_factor=0.2)
    rates(a, 7)
    b = schedule(warmup=20, min_factor=0.2)
    b.load_state_dict(a.state_dict())
    assert rates(b, 30) == rates(a, 30)


def test_keys_at_their_defaults_leave_the_recipe_and_its_digest_unchanged():
    plain = load_recipe("factorized")
    same = load_recipe("factorized", ["train.warmup_steps=0", "train.min_lr_factor=0"])
    assert same.digest() == plain.digest() and same.to_toml() == plain.to_toml()
    assert "warmup_steps" not in plain.to_toml() and "min_lr_factor" not in plain.to_toml()
    set_ = load_recipe("factorized", ["train.warmup_steps=100", "train.min_lr_factor=0.1"])
    assert set_.train["warmup_steps"] == 100 and set_.train["min_lr_factor"] == 0.1 and set_.digest() != plain.digest()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.warmup_steps=-1", "'warmup_steps' must be at least 0"),
        ("train.warmup_steps=2.5", "'warmup_steps' must be integer"),
        ("train.min_lr_factor=1.5", "'min_lr_factor' must be at least 0 and at most 1"),
        ("train.min_lr_factor=nan", "'min_lr_factor' must be at least 0"),
        ("train.warmup_step=3", "did you mean 'warmup_steps'"),
    ],
)
def test_bad_values_are_one_line_errors(override, expected):
    with pytest.raises(RecipeError) as info:
        load_recipe("factorized", [override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_warmup_needs_the_step_interval():
    with pytest.raises(RecipeError, match='warmup_steps needs schedule_interval = "step"'):
        build_training(load_recipe("factorized", ["train.warmup_steps=10"]))
    _, _, opt, _, sched = build_training(
        load_recipe("factorized", ["train.warmup_steps=10", "train.schedule_interval=step"]), steps_per_epoch=5
    )
    assert (sched.warmup, sched.horizon) == (10, 200 * 5) and opt.param_groups[0]["lr"] == pytest.approx(1e-4)


class Rates(Callback):
    def __init__(self):
        self.lr: list[float] = []

    def on_train_start(self, ctx):
        self.lr.append(ctx.optimizer.param_groups[0]["lr"])

    def on_step_end(self, ctx):
        self.lr.append(ctx.optimizer.param_groups[0]["lr"])


def test_a_run_applies_the_warmup_and_floor(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)  # 36 training images: 5 steps per epoch
    seen = Rates()
    overrides = [*TINY_FACTORIZED, "train.schedule_interval=step", "train.warmup_steps=4", "train.min_lr_factor=0.25"]
    train("factorized", npz, tmp_path / "r", overrides=overrides, epochs=2, evaluate=False, callbacks=[seen], **FAST)
    # the rate each step used, then the one after the last step
    cosine = [0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(11)]
    assert seen.lr == pytest.approx([1e-3 * c * min(1.0, (t + 1) / 4) for t, c in enumerate(cosine)], rel=1e-9)
