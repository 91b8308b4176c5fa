"""Issue #12, outputs that destroy inputs: no command writes over one of its inputs, or over a file without --force.

``rdkit compress ok.png -m M.pt -o M.pt`` once replaced the checkpoint, and
``rdkit eval M.pt --out M.pt`` replaced it with JSON. Every refusal happens
before any work; the inputs keep their bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_codec_support import TINY, make_checkpoint, smooth_image
from train_helpers import make_npz
from typer.testing import CliRunner

from rdkit_ae.cli import app
from rdkit_ae.commands.outputs import check_outputs, same_file
from rdkit_ae.errors import RdkitError

runner = CliRunner()


def rdkit(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=250, env={"COLUMNS": "250"})


def refused(res, *fragments: str) -> str:
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    recipe, overrides = TINY["factorized"]
    ck = make_checkpoint(root / "M.pt", recipe, overrides)
    Image.fromarray(smooth_image(24, 32)).save(root / "ok.png")
    assert rdkit("compress", root / "ok.png", "-m", ck, "-o", root / "ok.rdk").exit_code == 0
    return {"ck": ck, "png": root / "ok.png", "rdk": root / "ok.rdk", "npz": make_npz(root / "d.npz", n=2, size=16)}


@pytest.fixture
def files(setup):
    """Fingerprints of the inputs, compared after each test: nothing may have touched them."""
    before = {k: p.read_bytes() for k, p in setup.items()}
    yield setup
    assert {k: p.read_bytes() for k, p in setup.items()} == before


def _links(tmp_path: Path, target: Path) -> dict[str, Path]:
    hard, sym = tmp_path / f"hard{target.suffix}", tmp_path / f"sym{target.suffix}"
    os.link(target, hard)
    sym.symlink_to(target)
    return {"same": target, "hard link": hard, "symlink": sym}


def _link_dirs(tmp_path: Path, target: Path, kind: str) -> Path:
    if kind == "same":
        return target
    folder = tmp_path / target.stem
    folder.mkdir(exist_ok=True)
    return _links(folder, target)[kind]


@pytest.mark.parametrize("kind", ["same", "hard link", "symlink"])
def test_compress_and_decompress_never_write_over_an_input(files, tmp_path, kind):
    for target in (files["ck"], files["png"]):
        out = _link_dirs(tmp_path, target, kind)
        refused(rdkit("compress", files["png"], "-m", files["ck"], "-o", out, "--force"), "refusing to overwrite")
    if kind != "same":  # decompress writes images only: a .png name that links to the .rdk it decodes
        png = tmp_path / "r.png"
        os.link(files["rdk"], png) if kind == "hard link" else png.symlink_to(files["rdk"])
        refused(rdkit("decompress", files["rdk"], "-m", files["ck"], "-o", png, "-f"), "refusing to overwrite")


@pytest.mark.parametrize("kind", ["same", "hard link", "symlink"])
def test_eval_never_writes_json_or_csv_over_an_input(files, tmp_path, kind):
    ck = _link_dirs(tmp_path, files["ck"], kind)
    refused(rdkit("eval", files["ck"], "--data", files["npz"], "--out", ck, "--force"), "refusing to overwrite")
    refused(rdkit("eval", files["ck"], "--data", files["npz"], "--csv", ck, "--force"), "refusing to overwrite")
    data = _link_dirs(tmp_path, files["npz"], kind)
    refused(rdkit("eval", files["ck"], "--data", files["npz"], "--out", data, "--force"), "refusing to overwrite")


def test_import_and_export_never_write_over_their_input(files, tmp_path):
    weights = tmp_path / "w.pth.tar"
    weights.write_bytes(b"their weights")
    os.link(weights, tmp_path / "w-hard.pt")
    args = ["import", "compressai", "bmshj2018-factorized", "-w", weights]
    refused(rdkit(*args, "-o", tmp_path / "w-hard.pt", "--force"), "refusing to overwrite", "w.pth.tar")
    assert weights.read_bytes() == b"their weights"
    refused(rdkit("export", "compressai", files["ck"], "-o", files["ck"], "--force"), "refusing to overwrite")


def test_existing_outputs_need_force(files, tmp_path):
    out = tmp_path / "x.rdk"
    out.write_bytes(b"precious")
    refused(rdkit("compress", files["png"], "-m", files["ck"], "-o", out), "already exists", "--force")
    assert out.read_bytes() == b"precious"
    res = rdkit("compress", files["png"], "-m", files["ck"], "-o", out, "--force")
    assert res.exit_code == 0 and out.read_bytes() == files["rdk"].read_bytes(), res.output

    png = tmp_path / "x.png"
    png.write_bytes(b"precious")
    refused(rdkit("decompress", files["rdk"], "-m", files["ck"], "-o", png), "already exists")
    assert png.read_bytes() == b"precious"
    assert rdkit("decompress", files["rdk"], "-m", files["ck"], "-o", png, "-f").exit_code == 0
    assert np.asarray(Image.open(png)).shape == (24, 32, 3)

    # --out-dir and the default names are checked too, before any file is written.
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "ok.rdk").write_bytes(b"precious")
    refused(rdkit("compress", files["png"], "-m", files["ck"], "--out-dir", folder), "already exists")
    assert (folder / "ok.rdk").read_bytes() == b"precious"


def test_eval_outputs_need_force_and_must_differ(files, tmp_path):
    js, csv = tmp_path / "r.json", tmp_path / "r.csv"
    js.write_text("keep")
    base = ["eval", files["ck"], "--data", files["npz"]]
    refused(rdkit(*base, "--out", js), "already exists")
    refused(rdkit(*base, "--out", tmp_path / "new.json", "--csv", tmp_path / "new.json"), "both name")
    assert js.read_text() == "keep" and not (tmp_path / "new.json").exists()
    res = rdkit(*base, "--out", js, "--csv", csv, "--force")
    assert res.exit_code == 0, res.output
    assert js.read_text().startswith("{") and csv.read_text().startswith("checkpoint")


def test_import_and_export_outputs_need_force(files, tmp_path):
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"precious")
    refused(rdkit("import", "compressai", "bmshj2018-factorized", "-q", "1", "-o", existing), "already exists")
    refused(rdkit("export", "compressai", files["ck"], "-o", existing), "already exists")
    assert existing.read_bytes() == b"precious"


def test_check_outputs_directly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    assert same_file(a, a) and not same_file(a, b) and not same_file(b, tmp_path / "c")
    check_outputs([("-o", b), ("--csv", None)], [a])
    with pytest.raises(RdkitError, match="is a folder"):
        check_outputs([("-o", tmp_path)], [a], force=True)
    with pytest.raises(RdkitError, match="already exists"):
        check_outputs([("-o", a)], [])
    check_outputs([("-o", a)], [], force=True)


def _special_files(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a link to it and, as root, a character device equal to /dev/null (never the system's own)."""
    fifo = tmp_path / "fifo.png"  # decompress writes images only: a name it would accept
    os.mkfifo(fifo)
    link = tmp_path / "link-to-fifo.png"
    link.symlink_to(fifo)
    out = {"a FIFO": fifo, "a link to a FIFO": link}
    if os.geteuid() == 0:
        node = tmp_path / "null.png"
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out["a character device"] = node
    return out


def _unchanged(path: Path, kind: str) -> bool:
    mode = os.stat(path).st_mode
    return stat.S_ISCHR(mode) if kind == "a character device" else stat.S_ISFIFO(mode)


def test_outputs_onto_device_nodes_and_fifos_are_refused_with_force(files, tmp_path):
    """Issue #20: `-o /dev/null --force` as root replaced the system's /dev/null with a regular file."""
    weights = tmp_path / "w.pth.tar"
    weights.write_bytes(b"not read: the output is checked first")
    for kind, target in _special_files(tmp_path).items():
        what = "a FIFO" if "FIFO" in kind else kind
        commands = [
            ("compress", files["png"], "-m", files["ck"], "-o", target),
            ("decompress", files["rdk"], "-m", files["ck"], "-o", target),
            ("export", "compressai", files["ck"], "-o", target),
            ("import", "compressai", "bmshj2018-factorized", "-w", weights, "-o", target),
            ("eval", files["ck"], "--data", files["npz"], "--out", target),
        ]
        for args in commands:
            refused(rdkit(*args, "--force"), f"is {what}, not a regular file")
            assert _unchanged(target, kind), (kind, args)


def test_atomic_writes_never_replace_a_special_file(tmp_path):
    from rdkit_ae.files import atomic_write_text

    for kind, target in _special_files(tmp_path).items():
        if kind == "a link to a FIFO":
            continue  # a link is replaced itself, not what it points to: allowed when writing
        with pytest.raises(RdkitError, match="exists and is not a regular file"):
            atomic_write_text(target, "x")
        assert _unchanged(target, kind)
    with pytest.raises(RdkitError, match="is a FIFO"):
        check_outputs([("-o", tmp_path / "link-to-fifo.png")], [], force=True)
