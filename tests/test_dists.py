"""DISTS (rdkit_ae.evaluation.dists): values equal the DISTS_pytorch package's own network on the same random
VGG-16 backbone, the backbone lookup (hub cache, RDKIT_DISTS_BACKBONE, --dists-weights) and its one-line errors,
rdkit eval --metrics dists, and a bench spec with bd_metric = "dists"."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from plugin_helpers import random_vgg_state
from synthetic import smooth_images
from typer.testing import CliRunner

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.data.sources import to_tensor, to_uint8
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation import dists, learned_metrics
from rdkit_ae.evaluation.metrics import quality
from rdkit_ae.model import build_model

TINY_CONV = ["encoder.channels=[8, 8, 8]", "encoder.latent_channels=4", "quantizer.bits=4"]


def _torchvision_file(path, seed: int = 1):
    """A random VGG-16 in torchvision's full layout (features + classifier), as ``vgg16(weights=...)`` caches
    it. The classifier (unused by DISTS) is stored as zero-stride views, so the file holds only the ~59 MB of
    convolutions."""
    state = random_vgg_state(depth=29, seed=seed)
    for i, (out, inp) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        state[f"classifier.{i}.weight"] = torch.zeros(1).expand(out, inp)
        state[f"classifier.{i}.bias"] = torch.zeros(1).expand(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A torch home whose hub cache holds a random VGG-16, and the DISTS_pytorch reference network built from
    it the package's own way (``models.vgg16(pretrained=True)`` reads the cached file; nothing is downloaded),
    with the shipped alpha and beta."""
    from DISTS_pytorch import DISTS

    home = tmp_path_factory.mktemp("torch_home")
    _torchvision_file(home / "hub" / "checkpoints" / dists.HUB_FILE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        with warnings.catch_warnings():  # torchvision's note on `pretrained`, not ours to act on
            warnings.simplefilter("ignore")
            ref = DISTS(load_weights=False)
    shipped = torch.load(dists.heads_path(), weights_only=True)
    ref.alpha.data, ref.beta.data = shipped["alpha"], shipped["beta"]
    return home, ref.eval()


@pytest.fixture
def no_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(dists.ENV, raising=False)
    monkeypatch.setattr(dists, "_CACHE", {})


def _t(a: np.ndarray):
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0


def _noisy(images: np.ndarray, seed: int = 0, amount: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(int) + rng.integers(-amount, amount + 1, images.shape), 0, 255).astype(np.uint8)


def _reference(ref, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ref(_t(a), _t(b)).reshape(-1).numpy()


@pytest.mark.parametrize("h, w", [(32, 32), (48, 40), (64, 80)])
def test_dists_equals_the_reference_from_the_hub_cache(hub, monkeypatch, no_backbone, h, w):
    home, ref = hub
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(home / "hub"))
    a = smooth_images(3, h, w, seed=h)
    rng = np.random.default_rng(w)
    far = (255 * rng.random(a.shape) ** 3).astype(np.uint8)  # unlike a: larger values, every term at work
    for b in (_noisy(a, seed=1), far):
        got = [r["dists"] for r in quality(a, b, ["dists"])]
        np.testing.assert_allclose(got, _reference(ref, a, b), rtol=1e-4, atol=1e-6)
    same = quality(a, a, ["dists"])
    assert all(abs(r["dists"]) < 1e-5 for r in same)
    noisy = [r["dists"] for r in quality(a, _noisy(a, seed=1), ["dists"])]
    worse = [r["dists"] for r in quality(a, _noisy(a, seed=1, amount=90), ["dists"])]
    assert all(0 < n < v for n, v in zip(noisy, worse))  # more noise scores worse


def test_32x32_stages_and_smaller_images(hub, monkeypatch, no_backbone):
    """At 32x32 relu4_3 is 4x4 and relu5_3 2x2; below 32 sides DISTS gives None (no weights needed)."""
    home, _ = hub
    net = dists.load_dists(home / "hub" / "checkpoints" / dists.HUB_FILE)
    sides = [s.shape[-1] for s in net.stages(torch.rand(1, 3, 32, 32))]
    assert sides == [32, 32, 16, 8, 4, 2]
    assert sum(p.numel() for p in net.parameters()) == 0  # frozen: buffers only
    small = smooth_images(2, 24, 24)
    assert [r["dists"] for r in quality(small, _noisy(small), ["dists"])] == [None, None]


def test_env_and_explicit_file_and_bad_files(hub, tmp_path, monkeypatch, no_backbone):
    home, ref = hub
    file = home / "hub" / "checkpoints" / dists.HUB_FILE
    monkeypatch.setenv(dists.ENV, str(file))
    a = smooth_images(2, seed=3)
    b = _noisy(a, seed=2)
    got = [r["dists"] for r in quality(a, b, ["dists"])]
    np.testing.assert_allclose(got, _reference(ref, a, b), rtol=1e-4, atol=1e-6)
    assert dists.dists_backbone_path(file) == file

    torch.save(random_vgg_state(depth=22), tmp_path / "conv4_3.pth")  # like the offline file: stops at conv4_3
    with pytest.raises(RdkitError, match=r"features.24 missing or of the wrong shape: DISTS needs .*conv5_3"):
        dists.load_dists(tmp_path / "conv4_3.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RdkitError, match="cannot read DISTS backbone weights"):
        dists.load_dists(tmp_path / "junk.pth")
    monkeypatch.setenv(dists.ENV, str(tmp_path / "none.pth"))
    with pytest.raises(learned_metrics.MissingWeightsError, match=f"not found: .*none.pth \\({dists.ENV}\\)"):
        dists.load_dists()


def test_shipped_heads_and_bad_heads(tmp_path):
    alpha, beta = dists.load_heads()
    assert alpha.shape == beta.shape == (1475,) and float(alpha.sum() + beta.sum()) == pytest.approx(1.0)
    torch.save({"alpha": torch.ones(1, 10, 1, 1), "beta": torch.ones(1, 10, 1, 1)}, tmp_path / "w.pt")
    with pytest.raises(RdkitError, match="must have 1475 entries, got 10, 10"):
        dists.load_heads(tmp_path / "w.pt")
    torch.save({"alpha": torch.ones(3)}, tmp_path / "w.pt")
    with pytest.raises(RdkitError, match="not DISTS weights"):
        dists.load_heads(tmp_path / "w.pt")


def test_missing_backbone_is_one_line(no_backbone, tmp_path):
    from rdkit_ae.cli import app

    with pytest.raises(learned_metrics.MissingWeightsError, match="vgg16-397923af.pth") as err:
        dists.load_dists()
    assert "\n" not in str(err.value) and "--dists-weights" in str(err.value)
    np.savez(tmp_path / "d.npz", x=smooth_images(2))
    model = build_model("conv-mse", TINY_CONV)
    save_checkpoint(tmp_path / "c.pt", model, model.recipe)
    args = ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "dists"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "DISTS needs torchvision's ImageNet VGG-16 weights" in result.output
    missing = CliRunner().invoke(app, [*args, "--dists-weights", str(tmp_path / "none.pth")])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1
    assert "DISTS backbone weights not found" in missing.output and "(--dists-weights)" in missing.output


def test_cli_eval_dists_with_a_weights_file(hub, no_backbone, tmp_path):
    import os

    from rdkit_ae.cli import app

    home, ref = hub
    torch.manual_seed(0)
    model = build_model("conv-mse", TINY_CONV).eval()
    images = smooth_images(3, seed=9)
    np.savez(tmp_path / "d.npz", x=images)
    save_checkpoint(tmp_path / "c.pt", model, model.recipe)
    result = CliRunner().invoke(
        app,
        ["eval", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.npz"), "--metrics", "psnr,dists",
         "--dists-weights", str(home / "hub" / "checkpoints" / dists.HUB_FILE), "--out", str(tmp_path / "r.json"),
         "--csv", str(tmp_path / "r.csv")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dists 0." in result.output and "lower is better, 3 images" in result.output
    assert dists.ENV not in os.environ  # the option holds for that command only
    with torch.no_grad():
        c = model.compress(to_tensor(images).contiguous())
        decoded = to_uint8(model.decompress(c["strings"], c["shape"])["x_hat"])
    expected = _reference(ref, images, decoded)
    assert json.loads((tmp_path / "r.json").read_text())["results"]["dists-rgb"][0] == pytest.approx(
        float(expected.mean()), rel=1e-4
    )
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    np.testing.assert_allclose([float(r["dists"]) for r in rows], expected, rtol=1e-4)


def test_bench_spec_with_bd_metric_dists(hub, data, tmp_path, monkeypatch, no_backbone):
    from test_bench import write_spec

    from rdkit_ae.bench import SpecError, load_spec, run_sweep

    home, _ = hub
    body = 'bd_metric = "dists"\n[data]\neval = { path = "data/d.npz", stop = 4 }\n[classical]\nwebp = [10, 50, 90]\n'
    body += "jpeg = [20, 60, 90]\n"
    with pytest.raises(SpecError, match="metrics: DISTS needs torchvision's ImageNet VGG-16") as err:
        load_spec(write_spec(tmp_path, body))
    assert "\n" not in str(err.value)
    monkeypatch.setenv(dists.ENV, str(home / "hub" / "checkpoints" / dists.HUB_FILE))
    res = run_sweep(write_spec(tmp_path, body), tmp_path / "out")
    assert res.bd["metric"] == "dists-rgb" and res.bd["higher_is_better"] is False
    assert (tmp_path / "out" / "rd-dists.png").stat().st_size > 1000
    curves = {e["name"]: e["results"] for e in json.loads((tmp_path / "out" / "results.json").read_text())}
    webp = curves["WebP"]["dists-rgb"]
    assert len(webp) == 3 and webp[0] > webp[-1] >= 0  # higher WebP quality, lower DISTS
