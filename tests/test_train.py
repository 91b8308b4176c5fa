"""Training loop: run folder, exact resume, budgets, NaN stop, atomic checkpoints, VGG training."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_helpers import FAST, TINY_CONV, TINY_FACTORIZED, assert_same_weights, make_npz, model_state

from rdkit_ae.checkpoint import load_checkpoint, load_model, save_checkpoint
from rdkit_ae.errors import RdkitError, RecipeError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.recipe import load_recipe
from rdkit_ae.registry import REGISTRY, register
from rdkit_ae.training import train
from rdkit_ae.training.optim import LRSchedule, build_optimizers, build_training, split_parameters
from rdkit_ae.training.results import NonFiniteLossError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def npz(tmp_path):
    return make_npz(tmp_path / "images.npz", n=40, size=16)


def test_run_folder_is_complete_and_safe_to_load(tmp_path, npz):
    out = tmp_path / "run"
    res = train("factorized", npz, out, overrides=TINY_FACTORIZED, epochs=2, **FAST)
    names = {p.name for p in out.iterdir()}
    assert {
        "recipe.toml",
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "loss_curves.png",
        "comparison.png",
        "eval.json",
        "run.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert res.stopped == "completed" and res.epochs == 2 and res.steps == 2 * 5  # 36 train images / batch 8
    assert res.out_dir == out and res.best_checkpoint == out / "best.pt" and res.last_checkpoint == out / "last.pt"

    # metrics: one line per epoch with every loss term, validation metrics, lr and speed
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == res.metrics and [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        for key in (
            "train_loss",
            "train_mse",
            "train_rate",
            "train_aux",
            "val_loss",
            "val_mse",
            "val_rate",
            "val_psnr",
            "val_ssim",
            "val_bpp",
            "lr",
            "images_per_s",
        ):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
        assert r["train_loss"] == pytest.approx(r["train_mse"] + 0.002 * r["train_rate"], rel=1e-5)
    assert lines[1]["lr"] == pytest.approx(0.5e-3)  # cosine per epoch over 2 epochs

    # checkpoints: plain data only, with the training state and entropy tables
    for name in ("last.pt", "best.pt"):
        payload = torch.load(out / name, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "aux_optimizer", "scheduler", "position", "rng", "recipe", "run"} <= set(payload)
        assert payload["model"]["latent_codec.entropy_bottleneck._quantized_cdf"].numel() > 0
        assert isinstance(payload["rng"]["torch"], torch.Tensor) and isinstance(
            payload["rng"]["numpy"]["keys"], torch.Tensor
        )
    assert load_recipe(out / "recipe.toml").digest() == res_recipe_digest(out)
    model, _, _ = load_model(out / "best.pt")
    x = torch.rand(2, 3, 16, 16)
    enc = model.compress(x)
    decoded = model.decompress(enc["strings"], enc["shape"], enc["size"])["x_hat"]
    assert torch.equal(decoded, model(x)["x_hat"].clamp(0, 1))  # decompress clamps, as CompressAI's models do

    ev = json.loads((out / "eval.json").read_text())
    assert ev["name"] == "factorized" and ev["checkpoint"] == "best.pt"
    assert ev["summary"]["n_images"] == 4 and ev["summary"]["bpp"] > 0 and "psnr-rgb" in ev["results"]
    assert res.eval["summary"]["bpp"] == ev["summary"]["bpp"]
    for fig in ("loss_curves.png", "comparison.png"):
        assert (out / fig).read_bytes()[:8] == PNG_MAGIC


def res_recipe_digest(out):
    from rdkit_ae.recipe import Recipe

    return Recipe.from_toml(load_checkpoint(out / "last.pt")["recipe"]).digest()


@pytest.mark.parametrize(
    "recipe,overrides,stop_at",
    [
        ("factorized", TINY_FACTORIZED, 7),  # mid-epoch stop, aux optimiser, entropy bottleneck noise
        (
            "conv-mse",
            TINY_CONV + ["train.schedule_interval=step"],
            5,
        ),  # epoch boundary, flips + jitter, per-step cosine
    ],
)
def test_resumed_run_ends_bit_exact(tmp_path, npz, recipe, overrides, stop_at):
    straight = train(recipe, npz, tmp_path / "a", overrides=overrides, epochs=2, evaluate=False, **FAST)
    first = train(recipe, npz, tmp_path / "b", overrides=overrides, epochs=2, max_steps=stop_at, evaluate=False, **FAST)
    assert first.stopped == "max_steps" and first.steps == stop_at
    assert load_checkpoint(tmp_path / "b" / "last.pt")["position"]["step"] == stop_at
    resumed = train(None, resume=tmp_path / "b", evaluate=False, **FAST)
    assert resumed.stopped == "completed" and resumed.steps == straight.steps
    assert_same_weights(model_state(tmp_path / "a" / "last.pt"), model_state(tmp_path / "b" / "last.pt"))
    # the metrics of the resumed run are those of the uninterrupted one (timings aside)
    keys = ("epoch", "step", "lr", "train_loss", "val_loss", "val_psnr", "val_bpp")
    assert [{k: r[k] for k in keys} for r in resumed.metrics] == [{k: r[k] for k in keys} for r in straight.metrics]


def test_max_steps_partial_epoch_and_time_budget(tmp_path, npz):
    res = train("conv-mse", npz, tmp_path / "s", overrides=TINY_CONV, epochs=3, max_steps=3, evaluate=False, **FAST)
    assert res.stopped == "max_steps" and res.steps == 3 and res.epochs == 0
    assert [(r["epoch"], r["partial"]) for r in res.metrics] == [(1, True)]
    # a tiny budget still finishes the first epoch, then stops at its boundary and evaluates
    res = train("conv-mse", npz, tmp_path / "t", overrides=TINY_CONV, epochs=50, time_budget=1e-6, **FAST)
    assert res.stopped == "time_budget" and res.epochs == 1
    assert (tmp_path / "t" / "eval.json").is_file() and res.eval is not None


def test_resume_extends_plan_and_refuses_changes(tmp_path, npz):
    out = tmp_path / "r"
    train("conv-mse", npz, out, overrides=TINY_CONV, epochs=1, evaluate=False, **FAST)
    with pytest.raises(RdkitError, match="already finished its 1 epochs"):
        train(None, resume=out, evaluate=False, **FAST)
    with pytest.raises(RdkitError, match="--set cannot change"):
        train(None, resume=out, overrides=["train.optimizer.lr=0.1"], **FAST)
    with pytest.raises(RdkitError, match="keeps its seed"):
        train(None, resume=out, seed=5, epochs=2, **FAST)
    with pytest.raises(RdkitError, match="already holds a run"):
        train("conv-mse", npz, out, overrides=TINY_CONV, **FAST)
    with pytest.raises(RdkitError, match="nothing to resume"):
        train(None, resume=tmp_path, **FAST)
    res = train(None, resume=out, epochs=2, evaluate=False, **FAST)
    assert res.epochs == 2 and [r["epoch"] for r in res.metrics] == [1, 2]


def test_bad_arguments_are_one_line_errors(tmp_path, npz):
    with pytest.raises(RdkitError, match="--max-steps must be a positive integer"):
        train("conv-mse", npz, tmp_path / "x", max_steps=0, **FAST)
    with pytest.raises(RdkitError, match="--time-budget"):
        train("conv-mse", npz, tmp_path / "x", time_budget=-1, **FAST)
    with pytest.raises(RecipeError, match="schedule_interval 'batch'"):
        train("conv-mse", npz, tmp_path / "x", overrides=TINY_CONV + ["train.schedule_interval=batch"], **FAST)
    with pytest.raises(RdkitError, match="data not found"):
        train("conv-mse", tmp_path / "missing.npz", tmp_path / "y", overrides=TINY_CONV, **FAST)
    with pytest.raises(RdkitError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise RdkitError("CUDA is not available (skipped: this machine has one)")
        train("conv-mse", npz, tmp_path / "z", overrides=TINY_CONV, device="cuda", **FAST)


def test_optimisers_schedule_and_aux_split():
    model, objective, opt, aux_opt, sched = build_training(
        load_recipe("factorized", TINY_FACTORIZED + ["train.epochs=4"])
    )
    main, aux = split_parameters(model)
    assert [n for n, _ in aux] == ["latent_codec.entropy_bottleneck.quantiles"]
    assert {id(p) for g in aux_opt.param_groups for p in g["params"]} == {id(p) for _, p in aux}
    assert not {id(p) for g in opt.param_groups for p in g["params"]} & {id(p) for _, p in aux}
    lrs = []
    for _ in range(4):
        lrs.append(sched.lr)
        sched.step()
    assert lrs == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    conv = load_recipe("conv-mse", TINY_CONV + ["train.optimizer.name=sgd", "train.optimizer.momentum=0.5"])
    m2, *_ = build_training(conv)
    sgd, none = build_optimizers(m2, conv.train)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5 and none is None
    w = load_recipe(
        "conv-mse", ["train.optimizer.name=adamw", "train.optimizer.weight_decay=0.01", "train.schedule=constant"]
    )
    adamw, _ = build_optimizers(m2, w.train)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.01
    const = LRSchedule(adamw, "constant", "step", 10)
    const.step()
    assert const.lr == pytest.approx(1e-3)


# -- NaN stop -----------------------------------------------------------------------
class _NaNAfter(nn.Module):
    """MSE that turns NaN from the ``after``-th training call on (validation stays finite)."""

    def __init__(self, after: int = 1):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x, out):
        loss = F.mse_loss(out["x_hat"], x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                return loss * float("nan")
        return loss


@pytest.fixture
def nan_loss():
    register("loss", "test-nan-after", replace=True)(_NaNAfter)
    yield "test-nan-after"
    REGISTRY.unregister("loss", "test-nan-after")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, npz, nan_loss):
    out = tmp_path / "nan"
    # 5 steps per epoch: epoch 1 is finite and checkpointed, step 7 (epoch 2) is NaN.
    with pytest.raises(NonFiniteLossError) as info:
        train(_nan_recipe(tmp_path, nan_loss), npz, out, epochs=3, **FAST)
    msg = str(info.value)
    assert "\n" not in msg and "nan" in msg and "by step 7 (epoch 2)" in msg
    assert "last good checkpoint" in msg and "--set train.optimizer.lr" in msg
    payload = load_checkpoint(out / "last.pt")
    assert payload["position"] == {**payload["position"], "epoch": 1, "batch": 0, "step": 5}
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())
    assert [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def _nan_recipe(tmp_path, loss_name):
    path = tmp_path / "nan.toml"
    path.write_text(
        'extends = "conv-mse"\nreplace_losses = true\n'
        f'[[loss]]\nname = "{loss_name}"\nafter = 6\n'
        "[encoder]\nchannels = [8, 16]\nlatent_channels = 4\n"
        "[train]\nbatch_size = 8\ncrop_size = 16\n"
    )
    return path


def test_nan_in_the_first_epoch_says_no_checkpoint(tmp_path, npz, nan_loss):
    path = _nan_recipe(tmp_path, nan_loss)
    path.write_text(path.read_text().replace("after = 6", "after = 0"))
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet"):
        train(path, npz, tmp_path / "n0", **FAST)
    assert not (tmp_path / "n0" / "last.pt").exists()


# -- atomic checkpoints ---------------------------------------------------------------
def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path):
    recipe = load_recipe("conv-mse", TINY_CONV)
    model, *_ = build_training(recipe)
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, model, recipe, step=1)
    before = path.read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    # A real serialisation failure in the middle of torch.save: a value it cannot pickle.
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the pickler
        save_checkpoint(path, model, recipe, step=2, hook=lambda: None)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1

    # A crash after some bytes reached the temp file.
    def half_then_fail(f):
        f.write(before[: len(before) // 2])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, half_then_fail)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp files left


# -- the real VGG perceptual loss, from a local weights file ------------------------------
@pytest.mark.parametrize("convention", ["caffe", "torchvision"])
def test_hybrid_trains_with_local_vgg_weights(tmp_path, npz, monkeypatch, convention):
    from plugin_helpers import save_vgg_weights

    weights = save_vgg_weights(tmp_path / "vgg.pth", depth=15)
    monkeypatch.setenv("RDKIT_VGG_WEIGHTS", str(weights))
    monkeypatch.setenv("RDKIT_VGG_PREPROCESSING", convention)
    res = train("conv-hybrid", npz, tmp_path / "h", overrides=TINY_CONV, epochs=1, max_steps=2, evaluate=False, **FAST)
    rec = res.metrics[-1]
    assert rec["train_vgg-perceptual"] > 0 and math.isfinite(rec["train_vgg-perceptual"])
    assert rec["train_loss"] == pytest.approx(rec["train_mse"] + 0.1 * rec["train_vgg-perceptual"], rel=1e-5)
    assert "vgg-perceptual" in load_recipe(tmp_path / "h" / "recipe.toml").losses[1]["name"]
