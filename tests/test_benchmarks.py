"""The benchmark scripts: each stands alone on the library, and the time-to-quality study runs end to end.

The study itself takes hours; here its two specs are checked as committed,
then run on a few synthetic images with budgets of a second, and the report
is drawn from them and, unchanged, from the committed results.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import tomllib
from synthetic import smooth_images

from rdkit_ae.bench import load_spec, run_sweep

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
TTQ, ABLATIONS = BENCHMARKS / "time_to_quality.toml", BENCHMARKS / "time_to_quality_ablations.toml"


def imported_modules(path: Path) -> set[str]:
    """Every module a script imports (top-level names and dotted), at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: benchmarks/ is no package, so this names a sibling
                found.add("." * node.level + (node.module or ""))
            elif node.module:
                found.add(node.module)
    return found


def test_no_benchmark_script_imports_another():
    names = {p.stem for p in SCRIPTS}
    assert {"held_out", "time_to_quality_report", "train_speed"} <= names
    for path in SCRIPTS:
        imports = imported_modules(path)
        siblings = sorted(m for m in imports if m.split(".")[0] in names or m.startswith("."))
        assert not siblings, f"{path.name} imports the benchmark script(s) {siblings}"
        text = path.read_text(encoding="utf-8")
        assert "sys.path.insert" not in text and "sys.path.append" not in text, f"{path.name} edits sys.path"


def test_the_import_check_sees_sibling_imports(tmp_path):
    script = tmp_path / "x.py"
    script.write_text("import os\ndef f():\n    from train_speed import cpu_name\nfrom . import held_out\n")
    assert imported_modules(script) == {"os", "train_speed", "."}


def test_the_time_to_quality_specs_as_committed():
    budgets, ablations = load_spec(TTQ), load_spec(ABLATIONS)
    for spec in (budgets, ablations):
        assert spec.anchor == "WebP" and spec.bd_window == (1.0, 3.0)
        assert spec.train_data.stop == 2500 and (spec.eval_data.start, spec.eval_data.stop) == (2500, 3000)
        (webp,) = spec.codecs
        assert webp.qualities == list(range(101)) and webp.options == {"method": 6}
        assert all(p.budget.get("fit_schedule") for p in spec.points)
    assert [(m.name, m.points[0].budget["time_budget"]) for m in budgets.models] == [
        ("fast-vr, 5 min", 5),
        ("fast-vr, 15 min", 15),
        ("fast-vr, 30 min", 30),
    ]
    assert all(len(p.rates) == 7 for p in budgets.points)
    assert ablations.parallel == {"jobs": 2, "threads_per_job": 1}
    minutes = {m.name: sum(p.budget["time_budget"] for p in m.points) for m in ablations.models}
    assert len(minutes) == 9 and set(minutes.values()) == {15}  # the fixed-rate row: 4 trainings of 3.75 minutes


def tiny(spec: Path, out: Path, npz: Path, keep: int) -> Path:
    """The committed spec on synthetic images: small models, budgets of ~1 s, 3 WebP qualities, ``keep`` models."""
    raw = tomllib.loads(spec.read_text(encoding="utf-8"))
    raw["data"] = {"train": {"path": str(npz), "stop": 40}, "eval": {"path": str(npz), "start": 40}}
    raw["budget"]["time_budget"] = 0.015
    raw["classical"]["webp"]["qualities"] = [10, 50, 90]
    raw.pop("parallel", None)
    small = ["encoder.latent_channels=12", "encoder.channels=16", "train.batch_size=8", "train.warmup_steps=2"]
    models = raw["model"][:1] + raw["model"][-1:] if keep == 2 else raw["model"][:keep]
    for m in models:
        m["set"] = [*m.get("set", []), *small]
        if "time_budget" in m.get("budget", {}):
            m["budget"]["time_budget"] = 0.015 / (4 if "points" in m else 1)
        if "points" in m:
            m["points"] = m["points"][:2]
    raw["model"] = models
    path = out / spec.name
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def test_the_study_runs_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the test imports the report script as a module
    import time_to_quality_report as report

    npz = tmp_path / "d.npz"
    np.savez(npz, x=smooth_images(48, 32, 32, seed=5))
    budgets = run_sweep(tiny(TTQ, tmp_path, npz, keep=1), tmp_path / "ttq")
    ablations = run_sweep(tiny(ABLATIONS, tmp_path, npz, keep=2), tmp_path / "ttq-ablations")
    assert not budgets.failures and not ablations.failures
    out = tmp_path / "report"
    keep = tmp_path / "keep"
    sweeps = ["--budgets", str(tmp_path / "ttq"), "--ablations", str(tmp_path / "ttq-ablations")]
    report.main([*sweeps, "--out", str(out), "--keep", str(keep)])
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["curves"]}
    assert set(rows) == {
        "fast-vr, 5 min",
        "fast-vr all levers on",
        "fast-vr no variable rate (4 fixed-rate trainings sharing the budget)",
    }
    assert len(rows["fast-vr, 5 min"]["results"]["bpp"]) == 7 and rows["fast-vr, 5 min"]["kind"] == "budget"
    fixed = rows["fast-vr no variable rate (4 fixed-rate trainings sharing the budget)"]
    assert fixed["trainings"] == 2 and len(fixed["results"]["bpp"]) == 2 and fixed["steps"] > 0
    assert results["webp"]["bpp"] == sorted(results["webp"]["bpp"]) and len(results["webp"]["bpp"]) == 3
    assert results["data"]["window"] == [1.0, 3.0]
    table = (out / "table.md").read_text()
    assert "## Budgets" in table and "## Ablations" in table and "| fast-vr all levers on | 0.015 |" in table
    kept = sorted(p.name for p in keep.iterdir())  # named by curve, for held_out.py
    assert "fast-vr-all-levers-on.pt" in kept and "fast-vr--5-min.pt" in kept and len(kept) == 4
    assert "checkpoints" not in fixed  # this machine's paths stay out of the results
    for png in ("rd.png", "ablations.png", "psnr_vs_minutes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_the_report_redraws_the_committed_results_unchanged(tmp_path, monkeypatch):
    committed = BENCHMARKS / "results" / "time_to_quality"
    if not (committed / "results.json").is_file():
        pytest.skip("no committed time-to-quality results")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import time_to_quality_report as report

    shutil.copy(committed / "results.json", tmp_path / "results.json")
    report.main(["--out", str(tmp_path)])
    assert (tmp_path / "table.md").read_text() == (committed / "table.md").read_text()
