"""The "ema" callback: warm-up average of the weights, used for validation, best.pt and the final evaluation;
live entropy-model quantiles; exact resume."""

from __future__ import annotations

import pytest
import torch
from train_helpers import FAST, TINY_FACTORIZED, assert_same_weights, make_npz, model_state

from rdkit_ae.checkpoint import load_checkpoint
from rdkit_ae.errors import RecipeError
from rdkit_ae.plugins.ema import EMA, warmup_decay
from rdkit_ae.training import Callback, train

EMA_RECIPE = 'train.callbacks=[{ name = "ema", decay = 0.9 }]'


class LiveWeights(Callback):
    """The trained model's parameters after every step (it runs after the recipe's callbacks)."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []
        self.eval_model = None

    def on_step_end(self, ctx):
        self.steps.append({k: p.detach().clone() for k, p in ctx.model.named_parameters()})
        self.eval_model = ctx.eval_model


def test_warmup_decay():
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.9, 1000) == 0.9


def test_ema_is_the_warmup_average_and_is_saved_as_best_and_evaluated(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    live = LiveWeights()
    res = train(
        "factorized", npz, tmp_path / "r", overrides=[*TINY_FACTORIZED, EMA_RECIPE], epochs=1, callbacks=[live], **FAST
    )
    assert res.steps == 5 and len(live.steps) == 5
    # expected average: the first update copies, then lerp with the warm-up decay
    expected = dict(live.steps[0])
    for n, weights in enumerate(live.steps[1:], start=1):
        d = warmup_decay(0.9, n)
        expected = {k: v * d + weights[k] * (1 - d) for k, v in expected.items()}
    best, last = model_state(tmp_path / "r" / "best.pt"), model_state(tmp_path / "r" / "last.pt")
    averaged = dict(live.eval_model.named_parameters())
    for k, v in expected.items():
        if k.endswith("quantiles"):  # copied from the trained model, not averaged
            assert torch.equal(averaged[k], live.steps[-1][k]) and torch.equal(best[k], last[k])
        else:
            assert torch.allclose(averaged[k], v, atol=1e-6), k
            assert torch.equal(best[k], averaged[k]), k
    assert any(not torch.equal(best[k], last[k]) for k in expected if not k.endswith("quantiles"))
    assert all(torch.equal(last[k], live.steps[-1][k]) for k in expected)  # last.pt: the trained weights
    # the final evaluation used best.pt = the average (entropy tables built from it)
    assert res.eval is not None and res.eval["checkpoint"] == "best.pt"
    from rdkit_ae.checkpoint import load_model

    model, _, _ = load_model(tmp_path / "r" / "best.pt")
    assert torch.equal(model.g_a.net[0].weight, averaged["g_a.net.0.weight"].detach())
    assert load_checkpoint(tmp_path / "r" / "last.pt")["callbacks"]["ema"]["ema"]["n_averaged"] == 5


def test_resume_restores_the_average_exactly(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    kw = dict(overrides=[*TINY_FACTORIZED, EMA_RECIPE], epochs=2, evaluate=False, **FAST)
    train("factorized", npz, tmp_path / "full", **kw)
    train("factorized", npz, tmp_path / "part", max_steps=3, **kw)  # stops inside epoch 1
    assert load_checkpoint(tmp_path / "part" / "last.pt")["callbacks"]["ema"]["ema"]["n_averaged"] == 3
    train(None, npz, resume=tmp_path / "part", **{k: v for k, v in kw.items() if k != "overrides"})
    for name in ("last.pt", "best.pt"):
        assert_same_weights(model_state(tmp_path / "full" / name), model_state(tmp_path / "part" / name))
    full = load_checkpoint(tmp_path / "full" / "last.pt")["callbacks"]["ema"]["ema"]
    part = load_checkpoint(tmp_path / "part" / "last.pt")["callbacks"]["ema"]["ema"]
    assert full.keys() == part.keys()
    # every average and the count; integer buffers (entropy-coder tables) follow the trained model
    floats = [k for k, v in full.items() if torch.is_floating_point(v) or k == "n_averaged"]
    assert len(floats) > 10 and all(torch.equal(full[k], part[k]) for k in floats)


def test_bad_decay_is_a_one_line_recipe_error(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=16)
    for value in ("1.0", "-0.1", '"x"'):
        with pytest.raises(RecipeError) as info:
            train(
                "factorized",
                npz,
                tmp_path / "x",
                overrides=[f'train.callbacks=[{{ name = "ema", decay = {value} }}]'],
                **FAST,
            )
        assert "decay must be a number in [0, 1)" in str(info.value) and "\n" not in str(info.value)
    assert EMA(0.5).state_dict() == {}
