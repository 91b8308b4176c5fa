"""The ``tensorboard`` callback: event files TensorBoard's own reader reads back, resume, and one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_helpers import FAST, make_npz

from rdkit_ae.errors import RecipeError
from rdkit_ae.training import train


def _recipe(tmp_path, callbacks: str = '[{ name = "tensorboard" }]'):
    path = tmp_path / "tb.toml"
    path.write_text(
        'extends = "factorized"\n'
        "[encoder]\nN = 8\nM = 12\n"
        f"[train]\nbatch_size = 8\ncrop_size = 16\nepochs = 1\ncallbacks = {callbacks}\n"
    )
    return path


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_two_steps_write_scalars_and_a_reconstruction(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    out = tmp_path / "run"
    res = train(_recipe(tmp_path), npz, out, max_steps=2, **FAST)
    assert res.steps == 2
    folder = out / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*"))
    acc = _events(folder)
    tags = acc.Tags()
    assert {"step/loss", "step/mse", "step/rate", "step/aux", "step/lr"} <= set(tags["scalars"])
    assert [s for s, _ in _scalars(acc, "step/loss")] == [1, 2]
    assert all(v > 0 for _, v in _scalars(acc, "step/loss"))
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_loss", "val_psnr", "val_bpp", "lr"):
        ((step, value),) = _scalars(acc, f"epoch/{key}")
        assert step == 2 and value == pytest.approx(record[key], rel=1e-6)
    (image,) = acc.Images("reconstruction")
    assert image.step == 2 and image.width > image.height > 16  # 4 patches side by side, two rows
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_the_same_log(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, '[{ name = "tensorboard", every = 1, images = 0 }]')
    train(recipe, npz, out, max_steps=2, **FAST)
    train(None, resume=out, max_steps=4, **FAST)
    acc = _events(out / "tensorboard")
    assert [s for s, _ in _scalars(acc, "step/loss")] == [1, 2, 3, 4]
    assert "reconstruction" not in acc.Tags()["images"]


def test_off_by_default_and_log_dir_option(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n=40)
    train(_recipe(tmp_path, "[]"), npz, tmp_path / "plain", max_steps=1, **FAST)
    assert not (tmp_path / "plain" / "tensorboard").exists()
    train(_recipe(tmp_path, '[{ name = "tensorboard", log_dir = "tb" }]'), npz, tmp_path / "r", max_steps=1, **FAST)
    assert list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))


def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an install without it raises
    npz = make_npz(tmp_path / "d.npz", n=40)
    with pytest.raises(RecipeError, match=r"needs the tensorboard package: pip install rdkit-ae\[tensorboard\]") as e:
        train(_recipe(tmp_path), npz, tmp_path / "run", max_steps=1, **FAST)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("entry", ['{ name = "tensorboard", every = -1 }', '{ name = "tensorboard", log_dir = "" }'])
def test_bad_parameters_are_refused(tmp_path, entry):
    npz = make_npz(tmp_path / "d.npz", n=40)
    with pytest.raises(RecipeError, match="callback 'tensorboard'"):
        train(_recipe(tmp_path, f"[{entry}]"), npz, tmp_path / "run", max_steps=1, **FAST)
