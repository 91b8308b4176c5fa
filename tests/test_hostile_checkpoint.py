"""Issue #12, checkpoints: crafted recipes, oversized archives and flipped bytes are refused in one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_hostile_support import assert_cheap, assert_one_line_error, run_cli

from rdkit_ae.checkpoint import DIGEST_KEY, load_checkpoint, load_model, save_checkpoint, state_digest
from rdkit_ae.errors import CheckpointError
from rdkit_ae.model import build_model
from rdkit_ae.recipe import load_recipe

TINY = ("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(*TINY).eval()
    model.update(force=True)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, model.recipe)
    return path


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    payload = torch.load(src, weights_only=True)
    payload.update(changes)
    torch.save(payload, dst)
    return dst


def _flip_byte_in_largest_tensor(src: Path, dst: Path) -> Path:
    """Flip one byte in the middle of the biggest stored tensor, straight in the archive's bytes."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    # Local header: 30 bytes + name + extra field, then the stored (uncompressed) member.
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    dst.write_bytes(bytes(data))
    return dst


def test_saved_checkpoint_carries_a_digest_of_its_weights(tiny):
    payload = load_checkpoint(tiny)
    assert payload[DIGEST_KEY] == state_digest(payload["model"])
    model, _, _ = load_model(tiny)
    assert state_digest(model.state_dict()) == payload[DIGEST_KEY]


def test_digest_sees_one_bit_in_any_tensor_and_names_and_dtypes():
    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3, dtype=torch.int32)}
    base = state_digest(state)
    assert state_digest({"b": state["b"], "a": state["a"]}) == base  # order of the dict does not matter
    flipped = {**state, "a": state["a"].clone()}
    flipped["a"].view(torch.int32)[1, 1] ^= 1
    assert state_digest(flipped) != base
    assert state_digest({**state, "b": state["b"].to(torch.int64)}) != base
    assert state_digest({"a": state["a"].reshape(3, 2), "b": state["b"]}) != base
    assert state_digest({"c": state["a"], "b": state["b"]}) != base


def test_flipped_byte_inside_a_stored_tensor_is_refused(tiny, tmp_path):
    bad = _flip_byte_in_largest_tensor(tiny, tmp_path / "flipped.pt")
    with pytest.raises(CheckpointError, match="do not match their stored digest"):
        load_model(bad)


def test_checkpoint_written_before_digests_still_loads(tiny, tmp_path):
    payload = torch.load(tiny, weights_only=True)
    del payload[DIGEST_KEY]
    torch.save(payload, tmp_path / "old.pt")
    model, recipe, _ = load_model(tmp_path / "old.pt")
    x = torch.rand(1, 3, 16, 16)
    ref, _, _ = load_model(tiny)
    assert torch.equal(model(x)["x_hat"], ref(x)["x_hat"]) and recipe.name == "hyperprior"


def test_stored_recipe_with_huge_model_is_refused_before_building(tiny, tmp_path):
    huge = load_recipe("bmshj2018-hyperprior", ["encoder.N=6000"]).to_toml()
    bad = _rewrite(tiny, tmp_path / "huge.pt", recipe=huge)
    with pytest.raises(CheckpointError, match="parameters, more than the limit of 200,000,000"):
        load_model(bad)


def test_stored_recipe_that_does_not_match_the_weights_is_refused(tiny, tmp_path):
    other = load_recipe(TINY[0], ["encoder.N=16", "encoder.M=12", "quantizer.N=8"]).to_toml()
    with pytest.raises(CheckpointError, match=r"weights do not fit the stored recipe \('g_a"):
        load_model(_rewrite(tiny, tmp_path / "other.pt", recipe=other))


def test_weight_count_is_bounded(tiny):
    n = sum(v.numel() for v in load_checkpoint(tiny)["model"].values())
    with pytest.raises(CheckpointError, match=f"weights hold {n:,} numbers, more than the limit"):
        load_checkpoint(tiny, max_params=(n - 1) // 2)
    assert load_checkpoint(tiny, max_params=n)["recipe"]


def test_zip_bomb_checkpoint_is_refused_before_torch_reads_it(tiny, tmp_path):
    """A deflated member of 300 MB zeros costs 300 KB on disk; its declared size is checked first."""
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tiny) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        with dst.open("tiny/data/999", "w", force_zip64=True) as fp:
            zf_chunk = bytes(1 << 20)
            for _ in range(300):
                fp.write(zf_chunk)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(CheckpointError, match=r"refused: the archive unpacks to 31\d,\d{3},\d{3} bytes"):
        load_checkpoint(bomb, max_params=1)
    assert load_checkpoint(tiny, max_params=1 << 20)["recipe"]


@pytest.mark.parametrize(
    "recipe, overrides, fragment",
    [
        ("bmshj2018-hyperprior", ["encoder.N=6000"], "more than the limit of 200,000,000"),
        ("hyperprior", ["encoder.stages=40"], "stages must be in 1..8"),
        ("hyperprior", ["quantizer.hyper_stages=30"], "hyper_stages must be in 1..4"),
    ],
)
def test_cli_compress_with_crafted_recipe_is_one_line_and_cheap(tiny, tmp_path, recipe, overrides, fragment):
    # A recipe validation would refuse is stored as text: write it past the loader, as an attacker would.
    data = load_recipe(recipe).data
    data["encoder" if "encoder" in overrides[0] else "quantizer"].update(
        {overrides[0].split(".")[1].split("=")[0]: int(overrides[0].split("=")[1])}
    )
    import tomli_w

    bad = _rewrite(tiny, tmp_path / "crafted.pt", recipe=tomli_w.dumps(data))
    image = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    run = run_cli(tmp_path, "compress", image, "-m", bad, "-o", tmp_path / "a.rdk")
    assert_one_line_error(run, "cannot rebuild the model", fragment)
    assert_cheap(run)
    assert not (tmp_path / "a.rdk").exists()


def test_cli_refuses_flipped_checkpoint(tiny, tmp_path):
    bad = _flip_byte_in_largest_tensor(tiny, tmp_path / "flipped.pt")
    image = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    assert_one_line_error(run_cli(tmp_path, "compress", image, "-m", bad), "stored digest")


@pytest.mark.parametrize("with_digest", [False, True])
def test_a_zero_stride_claim_in_a_checkpoint_is_refused_before_it_is_copied(tmp_path, with_digest):
    """8 stored numbers claiming 360 million (a zero stride): refused in one line, before the digest or a copy."""
    model = build_model("hyperprior", ["encoder.N=8", "encoder.M=12", "quantizer.N=8"]).eval()
    model.update()
    save_checkpoint(tmp_path / "ok.pt", model, model.recipe)
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    key = next(k for k in payload["model"] if k.endswith("gaussian_conditional._quantized_cdf"))
    payload["model"][key] = torch.zeros(8, dtype=torch.int32).as_strided((4, 90_000_000), (1, 0))
    if not with_digest:
        payload.pop(DIGEST_KEY)
    torch.save(payload, tmp_path / "bad.pt")
    assert (tmp_path / "bad.pt").stat().st_size < 200_000
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    run = run_cli(tmp_path, "compress", tmp_path / "a.png", "-m", tmp_path / "bad.pt", "-o", tmp_path / "a.rdk")
    assert_one_line_error(run, "claims 360,000,000 numbers from a storage holding 8")
    assert_cheap(run)
    assert not (tmp_path / "a.rdk").exists()
