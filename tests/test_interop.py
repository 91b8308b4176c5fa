"""CompressAI interop: import (API, CLI, torch.hub cache, local files) and export, byte-identical with CompressAI.

CompressAI models of each supported architecture get random, perturbed
weights (noise on every parameter and on the entropy-bottleneck quantiles,
latents widened so many symbols are coded), are saved the way CompressAI's
zoo files are (a plain state dict in a .pth.tar), imported, and compared
string for string with CompressAI's own compress/decompress. Images are
multiples of 64 so neither side pads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.utils.eval_model.__main__ import load_checkpoint as compressai_eval_load
from compressai.zoo.image import model_architectures, model_urls
from typer.testing import CliRunner

from rdkit_ae.checkpoint import load_model
from rdkit_ae.cli import app
from rdkit_ae.codec import Codec
from rdkit_ae.codec.portability import entropy_path
from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.interop import (
    ARCHITECTURES,
    export_compressai,
    get_architecture,
    import_compressai,
    rate_weight,
)
from rdkit_ae.model import RDModel, build_model

ARCHS = list(ARCHITECTURES)
KODAK = Path("/work/shared/data/kodak/kodim01.png")
runner = CliRunner()


def _last_conv(seq):
    return [m for m in seq if hasattr(m, "weight")][-1]


def perturbed(arch: str, N: int = 128, M: int = 192, seed: int = 0):
    """A CompressAI model with random weights far from its initialisation, tables built."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model_architectures[arch](N, M)
    with torch.no_grad():
        for p in model.parameters():  # includes the EntropyBottleneck quantiles
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * (p.std() if p.numel() > 1 else 1.0))
        _last_conv(model.g_a).weight.mul_(100.0)  # latents of a few units, not ~0
        if hasattr(model, "h_s"):
            _last_conv(model.h_a).weight.mul_(10.0)
            last = _last_conv(model.h_s)
            last.weight.mul_(100.0)
            last.bias[:M].add_(3.0)  # scales of a few units
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (CompressAI model, path of its state dict saved like a zoo file)."""
    root = tmp_path_factory.mktemp("compressai")
    out = {}
    for i, arch in enumerate(ARCHS):
        model = perturbed(arch, seed=i)
        path = root / f"{arch}.pth.tar"
        torch.save(model.state_dict(), path)
        out[arch] = (model, path)
    return out


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(2, 3, 64, 128, generator=g)]
    if KODAK.is_file():
        from PIL import Image

        with Image.open(KODAK) as im:
            crop = np.asarray(im.convert("RGB"))[64:192, 128:320].copy()
        images.append(torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255.0).contiguous())
    return images


def assert_same_coding(ours, theirs):
    """Byte-identical strings and equal reconstructions (CompressAI clamps to [0, 1] when decoding).

    On the float entropy path, as CompressAI codes. The portable path (what
    .rdk files use) computes the side parameters in integers: other bytes,
    within a fraction of a percent, decoding to its own y_hat exactly.
    """
    for x in _images():
        a = theirs.compress(x)
        with entropy_path(ours, portable=False):
            b = ours.compress(x)
        assert b["strings"] == a["strings"]
        assert sum(len(s) for stream in a["strings"] for s in stream) > 100 * x.size(0)
        ref = theirs.decompress(a["strings"], a["shape"])["x_hat"]
        size = (b["size"],) if "size" in b else ()  # an RDModel crops to the size; CompressAI's models have none
        with entropy_path(ours, portable=False):
            got = ours.decompress(b["strings"], b["shape"], *size)["x_hat"].clamp(0, 1)
        assert torch.equal(got, ref)
        if not isinstance(ours, RDModel):
            continue  # a CompressAI model: the float path is all it has
        portable = ours.compress(x)
        n_float = sum(len(s) for stream in a["strings"] for s in stream)
        n_portable = sum(len(s) for stream in portable["strings"] for s in stream)
        assert abs(n_portable / n_float - 1) < 0.01
        back = ours.decompress(portable["strings"], portable["shape"], *size)["x_hat"]
        assert float((back - ours(x)["x_hat"][..., : back.size(-2), : back.size(-1)].clamp(0, 1)).abs().max()) == 0


def test_kodak_used_when_present():
    if not KODAK.is_file():
        pytest.skip("Kodak images not present (/work/shared/data/kodak)")
    assert len(_images()) == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_import_api_codes_like_compressai(saved, arch):
    theirs, path = saved[arch]
    ours, recipe = import_compressai(arch, 3, weights=path)
    assert recipe["encoder"]["N"] == 128 and recipe["encoder"]["M"] == 192
    assert not ours.training
    assert_same_coding(ours, theirs)


@pytest.mark.parametrize("arch", ARCHS)
def test_import_cli_checkpoint_codes_like_compressai(saved, arch, tmp_path):
    theirs, path = saved[arch]
    out = tmp_path / "imported.pt"
    res = runner.invoke(app, ["import", "compressai", arch, "--quality", "2", "--weights", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output.replace("\n", "")  # rich wraps long paths
    model, recipe, payload = load_model(out)
    assert payload["imported_from"]["compressai"] == arch
    assert recipe.description.startswith(f"CompressAI {arch} quality 2")
    assert_same_coding(model, theirs)
    # .rdk files through the codec, like any trained checkpoint
    codec = Codec.load(out)
    image = (_images()[-1][0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(codec.decompress(codec.compress(image)), codec.reconstruct(image))


@pytest.mark.parametrize("arch", ARCHS)
def test_export_round_trip_is_read_by_compressai(saved, arch, tmp_path):
    theirs, path = saved[arch]
    ours, _ = import_compressai(arch, weights=path)
    out = tmp_path / "exported.pth.tar"
    got_arch, _ = export_compressai(ours, out)
    assert got_arch.name == arch
    state = torch.load(out, weights_only=True)
    assert set(state) == set(theirs.state_dict())
    assert_same_coding(model_architectures[arch].from_state_dict(state).eval(), theirs)
    # what `python -m compressai.utils.eval_model checkpoint ... -a ARCH -p OUT` loads (it forces update())
    assert_same_coding(compressai_eval_load(arch, False, str(out)), theirs)


def test_export_cli_from_checkpoint(saved, tmp_path):
    theirs, path = saved["bmshj2018-hyperprior"]
    ckpt = tmp_path / "hp.pt"
    args = ["import", "compressai", "bmshj2018-hyperprior", "-w", str(path), "-o", str(ckpt)]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, ["export", "compressai", str(ckpt)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "hp.pth.tar"
    assert out.is_file() and "bmshj2018-hyperprior" in res.output
    state = torch.load(out, weights_only=True)
    assert_same_coding(model_architectures["bmshj2018-hyperprior"].from_state_dict(state).eval(), theirs)


def test_pretrained_route_reads_the_torch_hub_cache(saved, tmp_path, monkeypatch):
    # compressai.zoo.<arch>(pretrained=True) finds the file in TORCH_HOME's hub cache: no download.
    theirs, path = saved["bmshj2018-factorized"]
    url = model_urls["bmshj2018-factorized"]["mse"][1]
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / url.rsplit("/", 1)[1]).write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ours, recipe = import_compressai("bmshj2018-factorized", 1)
    assert recipe.name == "bmshj2018-factorized-q1"
    assert_same_coding(ours, theirs)


def test_network_failure_is_one_line_suggesting_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # A port that refuses connections: the download fails here whether or not there is internet.
    urls = {**model_urls["mbt2018-mean"]["mse"], 2: "http://127.0.0.1:9/mbt2018-mean-2-unreachable.pth.tar"}
    monkeypatch.setitem(model_urls["mbt2018-mean"], "mse", urls)
    res = runner.invoke(app, ["import", "compressai", "mbt2018-mean", "--quality", "2", "-o", str(tmp_path / "x.pt")])
    assert res.exit_code == 1
    # torch.hub announces the download ("Downloading: URL to PATH"); then one error line
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith("Downloading:")]
    assert len(lines) == 1 and "--weights" in lines[0]
    assert lines[0].startswith("error: cannot download CompressAI's pretrained mbt2018-mean quality 2")
    assert not (tmp_path / "x.pt").exists()


def test_wrapped_and_prefixed_state_dicts_load(saved, tmp_path):
    # CompressAI's training script saves {"state_dict": ...}; DataParallel adds "module.".
    theirs, path = saved["bmshj2018-factorized"]
    wrapped = tmp_path / "wrapped.pth.tar"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, wrapped)
    ours, _ = import_compressai("bmshj2018-factorized", 4, weights=wrapped)
    assert_same_coding(ours, theirs)


def test_tables_are_computed_when_the_file_has_none(tmp_path):
    # CompressAI's training script saves the entropy tables empty until update() is called.
    fresh = perturbed("bmshj2018-hyperprior", seed=5)
    tables = ("_cdf", "_offset", "_length", "table")
    state = {k: (v[:0] if k.endswith(tables) else v) for k, v in fresh.state_dict().items()}
    assert state["gaussian_conditional._quantized_cdf"].numel() == 0
    path = tmp_path / "not-updated.pth.tar"
    torch.save({"epoch": 9, "state_dict": state}, path)
    ours, _ = import_compressai("bmshj2018-hyperprior", weights=path)
    assert_same_coding(ours, fresh)


def test_bad_inputs_are_one_line_errors(saved, tmp_path):
    _, fact = saved["bmshj2018-factorized"]
    with pytest.raises(RdkitError, match="N=128, M=192, but bmshj2018-factorized quality 7 has N=192, M=320"):
        import_compressai("bmshj2018-factorized", 7, weights=fact)
    with pytest.raises(CheckpointError, match="not a CompressAI bmshj2018-hyperprior checkpoint"):
        import_compressai("bmshj2018-hyperprior", weights=fact)
    with pytest.raises(RdkitError, match="quality must be in 1..8"):
        import_compressai("bmshj2018-factorized", 9, weights=fact)
    with pytest.raises(RdkitError, match="give --quality"):
        import_compressai("mbt2018-mean")
    with pytest.raises(RdkitError, match="'mbt2018' is not supported: its autoregressive"):
        get_architecture("mbt2018")
    with pytest.raises(RdkitError, match="did you mean 'mbt2018-mean'"):
        get_architecture("mbt2018-men")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        import_compressai("bmshj2018-factorized", weights=junk)
    with pytest.raises(CheckpointError, match="weights not found"):
        import_compressai("bmshj2018-factorized", weights=tmp_path / "missing.pth.tar")
    pickled = tmp_path / "pickled.pth.tar"
    torch.save({"g_a.0.weight": torch.zeros(1), "obj": Path("/x")}, pickled)
    with pytest.raises(CheckpointError, match="refused"):
        import_compressai("bmshj2018-factorized", weights=pickled)
    res = runner.invoke(app, ["import", "compressai", "cheng2020-anchor", "-q", "1"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "not supported" in res.output


def test_export_refuses_other_architectures_in_one_line(tmp_path):
    cases = {
        "conv-mse": "no architecture with quantizer",
        "factorized": "has 4 GDN stages; this model has 3",
        "hyperprior": "has 4 GDN stages",
    }
    for recipe, message in cases.items():
        with pytest.raises(RdkitError, match=message):
            export_compressai(build_model(recipe), tmp_path / "x.pth.tar")
    split = build_model("bmshj2018-hyperprior", ["quantizer.N=64"])
    with pytest.raises(RdkitError, match="one N for its transforms and hyperprior"):
        export_compressai(split, tmp_path / "x.pth.tar")
    assert not (tmp_path / "x.pth.tar").exists()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("quality", [1, 8])
def test_zoo_recipes_have_compressai_layers_at_every_size(arch, quality):
    spec = get_architecture(arch)
    N, M = spec.sizes(quality)
    ours = build_model(spec.recipe, [f"{k}={v}" for k, v in spec.overrides(N, M).items()])
    theirs = model_architectures[arch](N, M)
    mapped = {k: tuple(v.shape) for k, v in spec.to_compressai(ours.state_dict()).items()}
    assert mapped == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_rate_weights_follow_compressai_lambdas():
    assert rate_weight("mse", 1) == pytest.approx(1 / (0.0018 * 255**2), rel=1e-3)
    assert rate_weight("mse", 8) == pytest.approx(1 / (0.18 * 255**2), rel=1e-3)
    assert rate_weight("ms-ssim", 3) == pytest.approx(1 / 8.73, rel=1e-3)
