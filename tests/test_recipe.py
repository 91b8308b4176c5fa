"""Recipes: zoo, extends, overrides, validation errors that name file, key and what is allowed."""

from __future__ import annotations

import pytest
import tomllib

from rdkit_ae import load_recipe, zoo_names
from rdkit_ae.errors import RecipeError
from rdkit_ae.recipe import Recipe, parse_override

ZOO = ["conv-hybrid", "conv-mse", "conv-ste", "factorized", "hyperprior"]


def test_zoo_lists_required_recipes():
    assert set(ZOO) <= set(zoo_names())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_recipes_resolve_and_roundtrip_through_toml(name):
    r = load_recipe(name)
    assert r.description and r.losses and r.train["batch_size"] >= 1
    again = Recipe.from_toml(r.to_toml(), name)
    assert again.data == r.data and again.digest() == r.digest()


def test_conv_hybrid_is_the_seed_setup():
    r = load_recipe("conv-hybrid")
    assert [(e["name"], e["weight"]) for e in r.losses] == [("mse", 1.0), ("vgg-perceptual", 0.1)]
    assert r.losses[1]["layers"] == ["relu1_2", "relu2_2", "relu3_3"]
    assert r["encoder"]["channels"] == [32, 64, 128] and r["encoder"]["latent_channels"] == 16
    assert r["quantizer"] == {"name": "uniform", "bits": 8}
    t = r.train
    assert (t["epochs"], t["batch_size"], t["schedule"]) == (200, 128, "cosine")
    assert t["optimizer"]["name"] == "adam" and t["optimizer"]["lr"] == 1e-3
    assert t["augment"]["hflip"] is True and 0 < t["augment"]["color_jitter"] <= 0.2


def test_extends_appends_losses_and_replace_losses(tmp_path):
    child = tmp_path / "child.toml"
    child.write_text('extends = "conv-mse"\n[[loss]]\nname = "ssim"\nweight = 0.5\n[train]\nepochs = 3\n')
    r = load_recipe(child)
    assert [e["name"] for e in r.losses] == ["mse", "ssim"] and r.train["epochs"] == 3
    assert r["encoder"]["channels"] == [32, 64, 128]  # inherited
    child.write_text('extends = "conv-mse"\nreplace_losses = true\n[[loss]]\nname = "ssim"\n')
    assert [e["name"] for e in load_recipe(child).losses] == ["ssim"]


def test_extends_by_relative_path_and_plugin_switch(tmp_path):
    (tmp_path / "base.toml").write_text('extends = "conv-mse"\n[quantizer]\nbits = 4\n')
    (tmp_path / "sub").mkdir()
    leaf = tmp_path / "sub" / "leaf.toml"
    leaf.write_text('extends = "../base.toml"\n[encoder]\nname = "gdn"\nN = 8\nM = 8\nstages = 3\n')
    r = load_recipe(leaf)
    assert r["quantizer"]["bits"] == 4
    assert r["encoder"] == {"name": "gdn", "N": 8, "M": 8, "stages": 3}  # conv's params dropped


def test_extends_cycle(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.toml")


def test_overrides_parse_toml_values_and_address_losses():
    r = load_recipe(
        "factorized", ["loss.rate.weight=0.01", "train.optimizer.lr=2e-4", "encoder.N=32", "train.augment.hflip=false"]
    )
    assert r.losses[1]["weight"] == 0.01 and r.train["optimizer"]["lr"] == 2e-4
    assert r["encoder"]["N"] == 32 and r.train["augment"]["hflip"] is False
    r = load_recipe("conv-mse", {"encoder.norm": "group", "loss.0.weight": 2})
    assert r["encoder"]["norm"] == "group" and r.losses[0]["weight"] == 2.0
    assert parse_override("encoder.channels=[8, 16]") == ("encoder.channels", [8, 16])
    assert parse_override("encoder.norm=group") == ("encoder.norm", "group")


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["loss.vgg.weight=1"], r"no \[\[loss\]\] named 'vgg'; losses: mse"),
        (["loss.weight=1"], r"use loss.NAME.param"),
        (
            ["encoder.chanels=[8]"],
            r"zoo:conv-mse: \[encoder\] encoder 'conv' has no parameter 'chanels' \(did you mean 'channels'\?\)",
        ),
        (["quantizer.name=unifrom"], r"\[quantizer\] unknown quantizer 'unifrom'.*did you mean 'uniform'"),
        (["train.epochs=ten"], r"\[train\] 'epochs' must be integer, got 'ten'"),
        (["train.epoch=3"], r"\[train\] unknown key 'epoch' \(did you mean 'epochs'\?\); allowed: epochs"),
        (["train.optimizer.name=lbfgs"], r"name 'lbfgs' is not one of: adam, adamw, sgd"),
        (["train.batch_size=0"], r"'batch_size' must be at least 1"),
        (["train.augment.hflip=1"], r"'hflip' must be boolean, got 1"),
        (["bogus=1"], r"unknown top-level key 'bogus'"),
        (["noequals"], r"must look like dotted.key=value"),
    ],
)
def test_override_errors_name_key_and_allowed(overrides, pattern):
    with pytest.raises(RecipeError, match=pattern):
        load_recipe("conv-mse", overrides)


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[encoder\nname = 1")
    with pytest.raises(RecipeError, match=r"bad.toml: invalid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"recipe file not found: .*missing.toml"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(RecipeError, match=r"unknown recipe 'conv-hybird'.*did you mean 'conv-hybrid'"):
        load_recipe("conv-hybird")
    noloss = tmp_path / "noloss.toml"
    noloss.write_text('[encoder]\nname = "conv"\n[quantizer]\nname = "uniform"\n')
    with pytest.raises(RecipeError, match=r"noloss.toml: a recipe needs at least one \[\[loss\]\]"):
        load_recipe(noloss)
    badparam = tmp_path / "badparam.toml"
    badparam.write_text('extends = "conv-mse"\n[[loss]]\nname = "vgg-perceptual"\nlayer = ["relu1_2"]\n')
    with pytest.raises(
        RecipeError,
        match=r"badparam.toml: \[\[loss\]\] #1 loss 'vgg-perceptual' has no parameter 'layer' "
        r"\(did you mean 'layers'\?\)",
    ):
        load_recipe(badparam)


def test_resolved_recipe_is_valid_toml_with_defaults():
    text = load_recipe("factorized").to_toml()
    data = tomllib.loads(text)
    assert data["train"]["clip_grad"] == 0.0 and data["decoder"]["name"] == "gdn"
