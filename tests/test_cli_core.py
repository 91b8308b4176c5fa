"""`rdkit plugins`, `rdkit recipes`, `rdkit info` and the CLI's error contract."""

from __future__ import annotations

import subprocess
import sys
import time

from typer.testing import CliRunner

from rdkit_ae.cli import app

runner = CliRunner()


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("plugins", "recipes", "info", "train", "eval", "bench", "compress", "decompress"):
        assert cmd in res.output


def test_plugins_table_and_kind_filter():
    res = runner.invoke(app, ["plugins"], terminal_width=200)
    assert res.exit_code == 0
    assert "factorized-entropy" in res.output and "vgg-perceptual" in res.output and "built-in" in res.output
    res = runner.invoke(app, ["plugins", "--kind", "quantizer"], terminal_width=200)
    assert "hyperprior" in res.output and "vgg-perceptual" not in res.output


def test_plugins_unknown_kind_is_one_line_error():
    res = runner.invoke(app, ["plugins", "--kind", "metric"])
    assert res.exit_code == 1
    kinds = "encoder, decoder, quantizer, loss, callback"
    assert res.output.strip() == f"error: unknown plugin kind 'metric'; kinds: {kinds}"


def test_recipes_list_and_show():
    res = runner.invoke(app, ["recipes"], terminal_width=200)
    assert res.exit_code == 0
    for name in ("conv-mse", "conv-hybrid", "conv-ste", "factorized", "hyperprior"):
        assert name in res.output
    res = runner.invoke(app, ["recipes", "show", "conv-hybrid", "--set", "train.epochs=2"])
    assert res.exit_code == 0
    assert 'name = "vgg-perceptual"' in res.output and "epochs = 2" in res.output


def test_recipes_show_error():
    res = runner.invoke(app, ["recipes", "show", "conv-mse", "--set", "train.epoch=2"])
    assert res.exit_code == 1 and res.output.startswith("error: zoo:conv-mse: [train] unknown key 'epoch'")


def test_info_reports_nominal_rate():
    res = runner.invoke(app, ["info", "conv-hybrid"], terminal_width=200)
    assert res.exit_code == 0
    assert "2048 bits = 256 bytes per image, 2 bpp, CR 12" in res.output
    res = runner.invoke(app, ["info", "conv-mse", "--set", "quantizer.bits=4", "--size", "64x64"], terminal_width=200)
    assert "latent for 64x64: 16x8x8" in res.output and "CR 24" in res.output


def test_console_script_is_fast_and_errors_have_no_traceback(tmp_path):
    exe = [sys.executable, "-c", "from rdkit_ae.cli import run; run()"]
    t0 = time.perf_counter()
    res = subprocess.run(exe + ["--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 0 and "plugins" in res.stdout
    assert "torch" not in subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rdkit_ae.cli; print(sorted(m for m in sys.modules if m in ('torch', 'compressai')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip("[]\n")
    assert elapsed < 10  # generous for loaded CI machines; the benchmark is below 1.5 s
    res = subprocess.run(exe + ["info", str(tmp_path / "missing.toml")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: recipe file not found: {tmp_path / 'missing.toml'}"]
