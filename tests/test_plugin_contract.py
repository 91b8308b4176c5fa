"""The plugin interface 1.0: the public module, and the three contract bugs, each as a third-party package would hit it.

Each third-party plugin is a real package written to a temporary folder:
discovered through its entry point by a fresh ``rdkit`` process, or imported
from that folder, never a class defined in this test module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import FAST, make_npz
from typer.testing import CliRunner

import rdkit_ae
from rdkit_ae.cli import app
from rdkit_ae.registry import REGISTRY


def write_package(root: Path, name: str, source: str, entry_point: bool = True) -> Path:
    """A package ``name`` under ``root`` with the given ``__init__`` source and (optionally) an rdkit_ae entry point."""
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    if entry_point:
        info = root / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[rdkit_ae.plugins]\n{name} = {name}\n")
    return root


def run_child(args: list[str], pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


AUX_PLUGIN = """
    import torch
    from torch import nn
    from rdkit_ae.plugin import FixedRateQuantizer, register_quantizer

    @register_quantizer("test-aux-offset")
    class AuxOffset(FixedRateQuantizer):
        '''Fixed rate; its only parameter is trained by its own aux_loss (as an entropy model's quantiles).'''

        plugin_name = "test-aux-offset"

        def __init__(self, channels: int, bits: int = 8):
            super().__init__(channels, bits)
            self.offset = nn.Parameter(torch.zeros(()))

        def to_grid(self, y):
            return torch.sigmoid(y) * (self.levels - 1)

        def from_grid(self, v):
            return v / (self.levels - 1)

        def aux_loss(self):
            return (self.offset - 3.0) ** 2
"""


def test_a_quantizers_own_aux_loss_trains_its_parameter(tmp_path):
    root = write_package(tmp_path / "site", "rdkit_test_aux", AUX_PLUGIN)
    npz = make_npz(tmp_path / "d.npz", n=40)
    recipe = tmp_path / "aux.toml"
    recipe.write_text(
        'extends = "conv-mse"\n[encoder]\nchannels = [8, 16]\nlatent_channels = 4\n'
        '[quantizer]\nname = "test-aux-offset"\n[train]\nbatch_size = 8\ncrop_size = 16\naux_lr = 0.1\n'
    )
    out = tmp_path / "run"
    res = run_child(
        ["rdkit", "train", "--recipe", str(recipe), "--data", str(npz), "-o", str(out), "--max-steps", "6"]
        + ["--threads", "1", "-q", "--no-eval"],
        root,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    # Adam at lr 0.1 moves it by about 0.1 per step toward 3; only the aux step can move it.
    assert 0.4 < float(state["latent_codec.offset"]) <= 0.7


def test_a_built_in_name_replaced_before_the_first_lookup(tmp_path):
    root = write_package(
        tmp_path / "site",
        "rdkit_test_replace",
        """
        from torch import nn
        from rdkit_ae.plugin import register_loss

        @register_loss("mse", replace=True)  # at import, before anything looked a plugin up
        class LoudMSE(nn.Module):
            '''A replacement for the built-in mse.'''

            def forward(self, x, out):
                return ((out["x_hat"] - x) ** 2).mean() * 2
        """,
        entry_point=False,
    )
    script = (
        "import rdkit_test_replace, json\n"
        "from rdkit_ae.registry import create, get_plugin, list_plugins, REGISTRY\n"
        "print(json.dumps({'mse': type(create('loss', 'mse')).__name__, 'origin': get_plugin('loss', 'mse').origin,"
        " 'ssim': get_plugin('loss', 'ssim').origin, 'n': len(list_plugins('quantizer')),"
        " 'failures': len(REGISTRY.failures)}))\n"
    )
    res = run_child([sys.executable, "-c", script], root, tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["mse"] == "LoudMSE" and got["origin"] == "rdkit_test_replace"
    assert got["ssim"] == "built-in" and got["n"] >= 7 and got["failures"] == 0  # the built-ins all loaded


@pytest.fixture
def raising_plugin(tmp_path):
    root = write_package(
        tmp_path / "site",
        "rdkit_test_raising",
        """
        import torch
        from rdkit_ae.plugin import FixedRateQuantizer, register_quantizer

        @register_quantizer("test-raising", replace=True)
        class Raising(FixedRateQuantizer):
            '''Codes fine, then raises while decoding (a plugin bug, not a bad file).'''

            plugin_name = "test-raising"

            def to_grid(self, y):
                return torch.sigmoid(y) * (self.levels - 1)

            def from_grid(self, v):
                return v / (self.levels - 1)

            def decompress(self, strings, shape, **kwargs):
                raise KeyError("table_of_offsets")
        """,
        entry_point=False,
    )
    sys.path.insert(0, str(root))
    try:
        __import__("rdkit_test_raising")
        yield
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("rdkit_test_raising", None)
        REGISTRY.unregister("quantizer", "test-raising")


def test_a_plugin_that_raises_in_decompress_is_named_not_blamed_on_the_file(tmp_path, raising_plugin):
    from rdkit_ae.checkpoint import save_checkpoint
    from rdkit_ae.model import build_model

    model = build_model(
        "conv-mse", ["encoder.channels=[8, 16]", "encoder.latent_channels=4", 'quantizer.name="test-raising"']
    )
    save_checkpoint(tmp_path / "m.pt", model.eval(), model.recipe)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "a.png")
    runner = CliRunner()
    ok = runner.invoke(
        app, ["compress", str(tmp_path / "a.png"), "-m", str(tmp_path / "m.pt"), "-o", str(tmp_path / "a.rdk")]
    )
    assert ok.exit_code == 0, ok.output
    res = runner.invoke(
        app, ["decompress", str(tmp_path / "a.rdk"), "-m", str(tmp_path / "m.pt"), "-o", str(tmp_path / "b.png")]
    )
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "quantizer 'test-raising' failed in decompress (KeyError" in lines[0] and "table_of_offsets" in lines[0]
    assert "corrupt" not in lines[0] and not (tmp_path / "b.png").exists()


def test_callbacks_from_the_top_level_and_on_exception(tmp_path):
    seen: list[str] = []

    @rdkit_ae.register_callback("test-failure-watch", replace=True)
    class Watch(rdkit_ae.Callback):
        def on_step_end(self, ctx):
            seen.append("step")

        def on_exception(self, ctx, exc):
            seen.append(f"exception:{type(exc).__name__}")

    @rdkit_ae.plugin.register_loss("test-nan", replace=True)
    class NaN(torch.nn.Module):
        def forward(self, x, out):
            return (out["x_hat"] * float("nan")).mean()

    try:
        assert (
            rdkit_ae.Callback is rdkit_ae.plugin.Callback
            and rdkit_ae.register_callback is rdkit_ae.plugin.register_callback
        )
        npz = make_npz(tmp_path / "d.npz", n=40)
        recipe = tmp_path / "r.toml"
        recipe.write_text(
            'extends = "conv-mse"\n[encoder]\nchannels = [8, 16]\nlatent_channels = 4\n'
            '[[loss]]\nname = "test-nan"\nweight = 1.0\n'
            '[train]\nbatch_size = 8\ncrop_size = 16\ncallbacks = [{ name = "test-failure-watch" }]\n'
        )
        with pytest.raises(rdkit_ae.RdkitError, match="the loss became nan"):
            rdkit_ae.train(recipe, npz, tmp_path / "run", max_steps=3, **FAST)
        assert seen == ["exception:NonFiniteLossError"]  # the NaN check raises at the step, before recipe hooks
    finally:
        REGISTRY.unregister("callback", "test-failure-watch")
        REGISTRY.unregister("loss", "test-nan")
