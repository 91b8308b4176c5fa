"""Registry: registration rules, lookups, errors and third-party entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import rdkit_ae
from rdkit_ae.errors import PluginError
from rdkit_ae.registry import REGISTRY, Registry


@pytest.fixture
def reg():
    r = Registry()
    r._loaded = True  # a fresh, empty registry: skip discovery
    return r


def test_register_get_create_list(reg):
    @reg.register("encoder", "toy")
    class Toy(torch.nn.Module):
        """A toy encoder.

        More text that is not the summary.
        """

        def __init__(self, width: int = 3):
            super().__init__()
            self.width = width

    info = reg.get("encoder", "toy")
    assert info.factory is Toy and info.summary == "A toy encoder."
    assert reg.create("encoder", "toy", width=5).width == 5
    assert [i.name for i in reg.list("encoder")] == ["toy"]
    assert reg.list("decoder") == []


def test_duplicate_needs_replace(reg):
    reg.register("loss", "l1")(lambda: None)
    with pytest.raises(PluginError, match="already registered"):
        reg.register("loss", "l1")(lambda: 1)
    new = lambda: 2  # noqa: E731
    reg.register("loss", "l1", replace=True)(new)
    assert reg.get("loss", "l1").factory is new


def test_unknown_name_lists_available_and_close_matches(reg):
    for name in ("uniform", "ste", "factorized-entropy"):
        reg.register("quantizer", name)(lambda: None)
    with pytest.raises(PluginError) as err:
        reg.get("quantizer", "unifrom")
    msg = str(err.value)
    assert "available: factorized-entropy, ste, uniform" in msg and "did you mean 'uniform'" in msg


def test_unknown_kind_and_new_kinds(reg):
    with pytest.raises(PluginError, match="unknown plugin kind 'metric'"):
        reg.register("metric", "psnr")
    reg.add_kind("metric")
    reg.register("metric", "psnr")(lambda: "ok")
    assert reg.create("metric", "psnr") == "ok"


def test_bad_parameter_names_are_named(reg):
    @reg.register("encoder", "p")
    def make(channels=(1, 2), latent_channels=4):
        """x"""

    with pytest.raises(
        PluginError, match=r"no parameter 'chanels' \(did you mean 'channels'\?\); allowed: channels, latent_channels"
    ):
        reg.create("encoder", "p", chanels=3)


def test_builtins_are_registered_with_summaries():
    infos = rdkit_ae.list_plugins()
    names = {(i.kind, i.name) for i in infos}
    for expected in [
        ("encoder", "conv"),
        ("encoder", "gdn"),
        ("decoder", "conv"),
        ("decoder", "gdn"),
        ("quantizer", "uniform"),
        ("quantizer", "ste"),
        ("quantizer", "factorized-entropy"),
        ("quantizer", "hyperprior"),
        ("loss", "mse"),
        ("loss", "vgg-perceptual"),
        ("loss", "ssim"),
        ("loss", "ms-ssim"),
        ("loss", "rate"),
    ]:
        assert expected in names
    assert all(i.summary and i.origin == "built-in" for i in infos if i.origin == "built-in")


def test_global_register_decorator_roundtrip():
    @rdkit_ae.register("loss", "test-l1")
    class L1(torch.nn.Module):
        """Mean absolute error (test plugin)."""

        def forward(self, x, out):
            return (out["x_hat"] - x).abs().mean()

    try:
        x = torch.rand(1, 3, 8, 8)
        assert rdkit_ae.create("loss", "test-l1")(x, {"x_hat": x}).item() == 0.0
        assert rdkit_ae.get_plugin("loss", "test-l1").origin.startswith("test_registry")
    finally:
        REGISTRY.unregister("loss", "test-l1")


def _make_dist(site, dist, module, source, entry_points):
    pkg = site / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rdkit_ae.plugins]\n" + entry_points + "\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def third_party_site(tmp_path):
    """A real plugin distribution (dist-info with entry points), a callable one and a broken one."""
    site = tmp_path / "site"
    _make_dist(
        site,
        "rdkit-tv-loss",
        "rdkit_tv_loss",
        '''
        import torch
        from rdkit_ae import register

        @register("loss", "tv")
        class TotalVariation(torch.nn.Module):
            """Total variation of the reconstruction (third-party example)."""

            def __init__(self, p: float = 1.0):
                super().__init__()
                self.p = p

            def forward(self, x, out):
                y = out["x_hat"]
                dh = (y[..., 1:, :] - y[..., :-1, :]).abs().pow(self.p).mean()
                return dh + (y[..., 1:] - y[..., :-1]).abs().pow(self.p).mean()
        ''',
        "tv = rdkit_tv_loss",
    )
    _make_dist(
        site,
        "rdkit-callable",
        "rdkit_callable",
        '''
        def setup():
            import torch
            from rdkit_ae import register

            @register("encoder", "identity-ish")
            class Id(torch.nn.Module):
                """Pixel-unshuffle encoder registered by a setup callable."""
                stride = 2
                out_channels = 12

                def forward(self, x):
                    return torch.nn.functional.pixel_unshuffle(x, 2)
        ''',
        "setup = rdkit_callable:setup",
    )
    _make_dist(
        site,
        "rdkit-broken",
        "rdkit_broken",
        "raise ImportError('needs a missing dependency')\n",
        "broken = rdkit_broken",
    )
    return site


def _run(code, site, cwd):
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_third_party_entry_points(third_party_site, tmp_path):
    recipe = tmp_path / "tv.toml"
    recipe.write_text('extends = "conv-mse"\n[[loss]]\nname = "tv"\nweight = 0.01\np = 2.0\n')
    code = f"""
import torch, rdkit_ae
from rdkit_ae.registry import REGISTRY
infos = {{(i.kind, i.name): i for i in rdkit_ae.list_plugins()}}
print("TV", infos[("loss", "tv")].origin, "|", infos[("loss", "tv")].summary)
print("CALLABLE", infos[("encoder", "identity-ish")].origin)
print("FAILED", [(f.name, f.origin, f.error) for f in REGISTRY.failures])
r = rdkit_ae.load_recipe({str(recipe)!r})
obj = rdkit_ae.build_objective(r)
x = torch.rand(2, 3, 32, 32)
total, terms = obj(x, {{"x_hat": x.flip(-1), "likelihoods": {{}}}})
print("TERMS", sorted(terms), float(terms["tv"]) > 0)
"""
    res = _run(code, third_party_site, tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "TV rdkit-tv-loss | Total variation of the reconstruction (third-party example)." in out
    assert "CALLABLE rdkit-callable" in out
    assert "('broken', 'rdkit-broken', 'ImportError: needs a missing dependency')" in out
    assert "TERMS ['mse', 'tv'] True" in out


def test_cli_lists_third_party_and_reports_broken(third_party_site, tmp_path):
    code = "import sys; from rdkit_ae.cli import app; sys.argv = ['rdkit', 'plugins', '--kind', 'loss']; app()"
    res = _run(code, third_party_site, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "tv" in res.stdout and "rdkit-tv-loss" in res.stdout
    assert "'broken' from rdkit-broken failed to load" in res.stdout.replace("\n", " ")
    assert "mse" in res.stdout and "conv" not in res.stdout  # --kind filters
