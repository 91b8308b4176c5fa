"""Training state and resume planning, without running a training loop."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from train_helpers import TINY_FACTORIZED, make_npz

from rdkit_ae.checkpoint import load_checkpoint, save_checkpoint
from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.recipe import load_recipe
from rdkit_ae.training import plan
from rdkit_ae.training.distributed import DistInfo
from rdkit_ae.training.optim import TrainStep, build_training
from rdkit_ae.training.options import TrainOptions
from rdkit_ae.training.state import (
    Position,
    RunConfig,
    restore_training,
    rng_capture,
    rng_restore,
    run_name,
    training_payload,
)


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_capture_and_restore_replay_every_stream(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    _draws()
    state = rng_capture()
    expected = _draws()
    # through a weights_only file, as in last.pt
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    _draws()
    rng_restore(loaded)
    assert _draws() == expected
    # a rank's own torch stream replaces the shared one
    other = torch.Generator().manual_seed(9).get_state()
    rng_restore(loaded, rank_torch=other)
    assert torch.rand(3).tolist() == torch.rand(3, generator=torch.Generator().manual_seed(9)).tolist()


def test_position_round_trip_and_next_epoch():
    p = Position(epoch=2, batch=3, step=13, best_loss=0.25, best_epoch=1.5, acc=torch.ones(2))
    q = Position.from_dict(p.to_dict())
    assert (q.epoch, q.batch, q.step, q.best_loss, q.best_epoch, q.acc) == (2, 3, 13, 0.25, 1.5, None)
    p.next_epoch()
    assert (p.epoch, p.batch, p.acc) == (3, 0, None)


def _trained_a_step(recipe, seed):
    torch.manual_seed(seed)
    model, objective, opt, aux_opt, sched = build_training(recipe, steps_per_epoch=5)
    TrainStep(model, objective, opt, aux_opt)(torch.rand(2, 3, 16, 16))
    sched.step()
    return model, opt, aux_opt, sched


def _payload_file(tmp_path, recipe, position, callbacks=None):
    model, opt, aux_opt, sched = _trained_a_step(recipe, seed=0)
    cfg = RunConfig("d.npz", 0.1, None, 4, 1, 1)
    extra = training_payload(position, opt, aux_opt, sched, cfg, callbacks)
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, model, recipe, **extra)
    return path, model, opt, sched


def test_payload_restores_weights_optimisers_schedule_position_and_rng(tmp_path):
    recipe = load_recipe("factorized", TINY_FACTORIZED + ["train.epochs=3"])
    pos = Position(epoch=1, batch=2, step=7, best_loss=0.5, best_epoch=1.0, acc=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.manual_seed(42)
    path, model, opt, sched = _payload_file(tmp_path, recipe, pos, {"my-cb": {"n": 3}})
    expected_noise = torch.rand(4)  # the stream continues from the captured state
    payload = load_checkpoint(path)  # weights_only
    assert payload["callbacks"] == {"my-cb": {"n": 3}} and payload["run"]["limit_val"] == 4
    assert torch.equal(payload["epoch_acc"], pos.acc)

    fresh, fresh_opt, fresh_aux, fresh_sched = _trained_a_step(recipe, seed=5)
    assert not torch.equal(next(fresh.parameters()), next(model.parameters()))
    restored = restore_training(payload, fresh, fresh_opt, fresh_aux, fresh_sched, str(path))
    assert (restored.epoch, restored.batch, restored.step, restored.best_loss) == (1, 2, 7, 0.5)
    assert torch.equal(restored.acc, pos.acc)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(opt.state.values(), fresh_opt.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert fresh_sched.t == sched.t == 1 and fresh_sched.lr == sched.lr
    assert torch.equal(torch.rand(4), expected_noise)
    # another rank carries no loss sums of its own (rank 0 holds everyone's)
    other = restore_training(payload, fresh, fresh_opt, fresh_aux, fresh_sched, str(path), DistInfo(1, 2, 1))
    assert torch.equal(other.acc, torch.zeros(4))


def test_restoring_into_a_different_model_is_a_one_line_checkpoint_error(tmp_path):
    path, *_ = _payload_file(tmp_path, load_recipe("factorized", TINY_FACTORIZED), Position())
    other = load_recipe("factorized", ["encoder.N=4", "encoder.M=12", "train.batch_size=8", "train.crop_size=16"])
    model, objective, opt, aux_opt, sched = build_training(other)
    with pytest.raises(CheckpointError) as info:
        restore_training(load_checkpoint(path), model, opt, aux_opt, sched, str(path))
    assert "cannot restore the training state" in str(info.value) and "\n" not in str(info.value)


def test_resume_planning_reads_the_stored_run_and_refuses_changes(tmp_path):
    recipe = load_recipe("factorized", TINY_FACTORIZED + ["train.epochs=3", "train.seed=4"])
    path, *_ = _payload_file(tmp_path, recipe, Position(epoch=1, step=5))
    run_dir = path.parent
    p = plan.plan_run(TrainOptions(resume=run_dir, epochs=5, data="other.npz", threads=2))
    assert p.resuming and p.out == run_dir and p.recipe.train["epochs"] == 5 and p.recipe.train["seed"] == 4
    assert (p.config.data, p.config.limit_val, p.config.threads) == ("other.npz", 4, 2)
    assert any("from 3 to 5 epochs" in n for n in p.notes) and any(
        "reading the data from other.npz" in n for n in p.notes
    )
    p = plan.plan_run(TrainOptions(resume=path))  # a checkpoint file names its folder
    assert p.out == run_dir and p.config.data == "d.npz" and p.notes == []
    for options, message in [
        (TrainOptions(resume=run_dir, seed=1), "keeps its seed"),
        (TrainOptions(resume=run_dir, overrides=("train.optimizer.lr=0.1",)), "--set cannot change"),
        (TrainOptions(resume=run_dir, recipe="conv-mse"), "differs from the recipe stored"),
        (TrainOptions(resume=run_dir, out=tmp_path / "elsewhere"), "different folders"),
        (TrainOptions(resume=tmp_path / "empty"), "nothing to resume"),
    ]:
        with pytest.raises(RdkitError, match=message):
            plan.plan_run(options)
    # a checkpoint without training state (e.g. an exported model) cannot be resumed
    model, *_ = build_training(recipe)
    save_checkpoint(tmp_path / "w" / "last.pt", model, recipe)
    with pytest.raises(CheckpointError, match="not a training checkpoint \\(no 'optimizer'\\)"):
        plan.plan_run(TrainOptions(resume=tmp_path / "w"))


def test_new_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    npz = make_npz(tmp_path / "d.npz")
    a = plan.plan_run(TrainOptions(recipe="conv-mse", data=npz, epochs=2, seed=7, threads=1))
    b = plan.plan_run(TrainOptions(recipe="conv-mse", data=npz))
    assert not a.resuming and a.out != b.out and a.out.is_dir() and b.out.is_dir()
    assert a.out.parent == plan.RUNS_DIR and a.out.name.startswith("conv-mse-")
    assert (a.recipe.train["epochs"], a.recipe.train["seed"], a.config.threads) == (2, 7, 1)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "last.pt").write_bytes(b"")
    with pytest.raises(RdkitError, match="already holds a run"):
        plan.plan_run(TrainOptions(recipe="conv-mse", out=tmp_path / "taken"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RdkitError, match="exists and is not a folder"):
        plan.plan_run(TrainOptions(recipe="conv-mse", out=tmp_path / "file"))
    with pytest.raises(RdkitError, match="give a recipe"):
        plan.plan_run(TrainOptions())


def test_run_name_is_the_run_folder_for_best_and_last_else_the_file():
    assert run_name("runs/fast-vr/best.pt") == run_name("runs/fast-vr/last.pt") == "fast-vr"
    assert run_name("models/fast-vr-small.pt") == "fast-vr-small"
    assert run_name("runs/x/best-of-3.pt") == "best-of-3"
