"""Training callbacks: a plugin named in a recipe's [train] table, hook order and step counts, state across resume,
model substitution (EMA weights in best.pt), and one-line errors for bad entries."""

from __future__ import annotations

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from train_helpers import FAST, make_npz
from typer.testing import CliRunner

import rdkit_ae
from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.errors import RecipeError
from rdkit_ae.registry import REGISTRY
from rdkit_ae.training import Callback, train

MADE: list["Counter"] = []  # every Counter the registry's factory built, newest last


class Counter(Callback):
    """Records every hook call with the step it saw; counts steps across resumes through its state."""

    def __init__(self, tag: str = "x", every: int = 1):
        self.tag, self.every = tag, every
        self.calls: list[tuple] = []
        self.total_steps = 0
        self.loaded: dict | None = None
        MADE.append(self)

    def on_train_start(self, ctx):
        self.calls.append(("train_start", ctx.step))

    def on_epoch_start(self, ctx):
        self.calls.append(("epoch_start", ctx.epoch, ctx.step))

    def on_step_end(self, ctx):
        assert ctx.losses is not None and ctx.losses.shape == (len(ctx.term_names),)
        assert ctx.optimizer.param_groups[0]["lr"] > 0 and ctx.model.training
        self.total_steps += 1
        self.calls.append(("step", ctx.step, ctx.position.batch))

    def on_validation(self, ctx, metrics):
        self.calls.append(("validation", ctx.step, sorted(k for k in metrics if k in ("val_loss", "val_psnr"))))

    def on_epoch_end(self, ctx):
        self.calls.append(("epoch_end", ctx.step, ctx.record["step"], ctx.record["partial"]))

    def on_train_end(self, ctx):
        self.calls.append(("train_end", ctx.result.steps, ctx.result.stopped))

    def state_dict(self):
        return {"tag": self.tag, "total_steps": self.total_steps, "seen": torch.tensor([self.total_steps])}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.total_steps = int(state["total_steps"])


@pytest.fixture
def counter_plugin():
    rdkit_ae.register("callback", "test-counter", replace=True)(Counter)
    MADE.clear()
    yield "test-counter"
    REGISTRY.unregister("callback", "test-counter")


def _recipe(tmp_path, callbacks: str):
    path = tmp_path / "cb.toml"
    path.write_text(
        'extends = "conv-mse"\n'
        "[encoder]\nchannels = [8, 16]\nlatent_channels = 4\n"
        f"[train]\nbatch_size = 8\ncrop_size = 16\nepochs = 1\ncallbacks = {callbacks}\n"
    )
    return path


def test_recipe_callback_runs_its_hooks_and_its_state_survives_resume(tmp_path, counter_plugin):
    npz = make_npz(tmp_path / "d.npz", n=40)  # 36 training images, batch 8: 5 steps in the epoch
    recipe = _recipe(tmp_path, '[{ name = "test-counter", tag = "a", every = 2 }]')
    out = tmp_path / "run"
    res = train(recipe, npz, out, max_steps=2, **FAST)
    assert res.stopped == "max_steps" and res.steps == 2
    (cb,) = MADE
    assert (cb.tag, cb.every, cb.loaded) == ("a", 2, None)
    assert cb.calls == [
        ("train_start", 0),
        ("epoch_start", 0, 0),
        ("step", 1, 1),
        ("step", 2, 2),
        ("validation", 2, ["val_loss", "val_psnr"]),
        ("epoch_end", 2, 2, True),
        ("train_end", 2, "max_steps"),
    ]
    stored = load_checkpoint(out / "last.pt")["callbacks"]
    assert stored["test-counter"]["total_steps"] == 2 and torch.equal(stored["test-counter"]["seen"], torch.tensor([2]))

    res = train(None, resume=out, max_steps=4, **FAST)
    assert res.steps == 4
    resumed = MADE[-1]
    assert resumed is not cb and resumed.loaded["total_steps"] == 2 and resumed.loaded["tag"] == "a"
    assert [c for c in resumed.calls if c[0] == "step"] == [("step", 3, 3), ("step", 4, 4)]
    assert resumed.calls[0] == ("train_start", 2) and resumed.calls[-1] == ("train_end", 4, "max_steps")
    assert load_checkpoint(out / "last.pt")["callbacks"]["test-counter"]["total_steps"] == 4


def test_bad_callback_entries_are_one_line_recipe_errors(tmp_path, counter_plugin):
    npz = make_npz(tmp_path / "d.npz", n=40)
    cases = [
        ('[{ name = "test-countr" }]', "unknown callback 'test-countr'; available: "),
        ('[{ name = "test-counter", colour = 1 }]', "has no parameter 'colour'"),
        ('[{ name = "checkpoint" }]', "built in and always on"),
        ("[1]", "must be a table with a string 'name'"),
    ]
    for i, (entry, expected) in enumerate(cases):
        with pytest.raises(RecipeError) as info:
            train(_recipe(tmp_path, entry), npz, tmp_path / f"bad{i}", **FAST)
        msg = str(info.value)
        assert expected in msg and "[train] callbacks #0" in msg and "\n" not in msg, msg
    with pytest.raises(RecipeError, match="available: .*test-counter"):
        train(_recipe(tmp_path, '[{ name = "nope" }]'), npz, tmp_path / "bad-x", **FAST)
    assert MADE == []  # nothing was built, no step was taken


class EMA(Callback):
    """Exponential moving average of the weights, validated and saved as best.pt in place of the raw model."""

    def __init__(self, decay: float = 0.5):
        self.decay, self.ema, self.pending = decay, None, None

    def on_train_start(self, ctx):
        self.ema = AveragedModel(ctx.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        if self.pending is not None:
            self.ema.load_state_dict(self.pending)
        ctx.eval_model = self.ema.module

    def on_step_end(self, ctx):
        self.ema.update_parameters(ctx.model)

    def state_dict(self):
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state):
        self.pending = state["ema"]


def test_a_callback_substitutes_the_model_that_is_validated_and_saved_as_best(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    ema = EMA(0.5)
    res = train(
        "conv-mse",
        npz,
        tmp_path / "e",
        overrides=["encoder.channels=[8, 16]", "encoder.latent_channels=4", "train.batch_size=8"]
        + ["train.crop_size=16"],
        epochs=1,
        evaluate=False,
        callbacks=[ema],
        **FAST,
    )
    assert res.steps == 5 and int(ema.ema.n_averaged) == 5
    best = load_checkpoint(tmp_path / "e" / "best.pt")["model"]
    last = load_checkpoint(tmp_path / "e" / "last.pt")["model"]
    averaged = dict(ema.ema.module.named_parameters())
    assert averaged and all(torch.equal(best[k], p.detach()) for k, p in averaged.items())
    assert not all(torch.equal(last[k], best[k]) for k in averaged)  # last.pt keeps the trained weights
    assert load_checkpoint(tmp_path / "e" / "last.pt")["callbacks"]["EMA"]["ema"]["n_averaged"] == 5


def test_builtin_callbacks_are_listed_as_plugins():
    res = CliRunner().invoke(app, ["plugins", "--kind", "callback"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("checkpoint", "metrics-log", "figures", "nonfinite-stop", "max-steps", "time-budget"):
        assert name in res.output
    assert all(info.origin == "built-in" for info in REGISTRY.list("callback") if info.name == "checkpoint")
