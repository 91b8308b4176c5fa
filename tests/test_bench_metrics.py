"""`rdkit bench` with perceptual metrics: top-level metrics = [...] and bd_metric, per-metric RD plots,
BD-rate on a lower-is-better metric, and one-line spec errors."""

from __future__ import annotations

import csv
import json

import pytest
from test_bench import write_spec
from typer.testing import CliRunner

from rdkit_ae.bench import SpecError, load_spec, run_sweep
from rdkit_ae.evaluation.bdrate import bjontegaard


def test_classical_sweep_with_metrics_and_bd_on_ms_gmsd(tmp_path, data):
    from rdkit_ae.cli import app

    body = 'metrics = ["haarpsi"]\nbd_metric = "ms-gmsd"\n[data]\neval = { path = "data/d.npz", stop = 6 }\n'
    body += "[classical]\nwebp = [10, 40, 70, 90]\njpeg = [30, 60, 90]\n"
    spec = write_spec(tmp_path, body)
    assert load_spec(spec).eval_data.metrics == ("haarpsi", "ms-gmsd")  # bd_metric is measured too
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["bench", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "rd-haarpsi.png").stat().st_size > 1000 and (out / "rd-ms-gmsd.png").stat().st_size > 1000
    curves = {e["name"]: e["results"] for e in json.loads((out / "results.json").read_text())}
    webp, jpeg = curves["WebP"], curves["JPEG"]
    assert len(webp["haarpsi-rgb"]) == 4 and len(jpeg["ms-gmsd-rgb"]) == 3
    assert all(0 < v <= 1 for v in webp["haarpsi-rgb"]) and all(v >= 0 for v in webp["ms-gmsd-rgb"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert float(rows[0]["haarpsi"]) == pytest.approx(webp["haarpsi-rgb"][0])
    bd = json.loads((out / "bd_rate.json").read_text())
    assert bd["metric"] == "ms-gmsd-rgb" and bd["higher_is_better"] is False
    expected = bjontegaard(
        webp["bpp"], [-v for v in webp["ms-gmsd-rgb"]], jpeg["bpp"], [-v for v in jpeg["ms-gmsd-rgb"]]
    )
    got = bd["curves"]["JPEG"]
    assert got["bd_rate"] == pytest.approx(expected.bd_rate) if expected.bd_rate is not None else got["bd_rate"] is None
    info = json.loads((out / "sweep.json").read_text())
    assert info["metrics"] == ["haarpsi", "ms-gmsd"] and info["bd_metric"] == "ms-gmsd"
    md = (out / "bd_rate.md").read_text()
    assert "mean MS-GMSD (RGB; lower is better)" in md and "| BD-MS-GMSD |" in md


def _external(tmp_path, name, rates, values, key):
    entry = {"name": name, "results": {"bpp": rates, "psnr-rgb": [30.0] * len(rates), key: values}}
    (tmp_path / f"{name}.json").write_text(json.dumps(entry))


@pytest.mark.parametrize("metric, key, sign", [("ms-gmsd", "ms-gmsd-rgb", -1), ("haarpsi", "haarpsi-rgb", 1)])
def test_bd_direction_on_known_curves(tmp_path, data, metric, key, sign):
    """A curve with the anchor's qualities at 0.8x its rates is 20% cheaper, whichever way the metric points;
    one better by 0.01 at the same rates gives BD-quality of 0.01 in the metric's better direction."""
    rates = [0.5, 1.0, 2.0, 3.0, 4.0]
    values = [0.20, 0.15, 0.10, 0.07, 0.05] if sign < 0 else [0.80, 0.85, 0.90, 0.93, 0.95]
    _external(tmp_path, "a", rates, values, key)
    _external(tmp_path, "cheaper", [0.8 * r for r in rates], values, key)
    _external(tmp_path, "better", rates, [v + sign * 0.01 for v in values], key)
    body = f'anchor = "a"\nbd_metric = "{metric}"\n[data]\neval = "data/d.npz"\n'
    body += "".join(f'[[external]]\npath = "{n}.json"\n' for n in ("a", "cheaper", "better"))
    res = run_sweep(write_spec(tmp_path, body), tmp_path / "out")
    assert res.bd["metric"] == key
    assert res.bd["curves"]["cheaper"]["bd_rate"] == pytest.approx(-20.0, abs=1e-6)
    assert res.bd["curves"]["better"]["bd_rate"] < 0
    assert res.bd["curves"]["better"]["bd_quality"] == pytest.approx(sign * 0.01, abs=1e-6)
    assert (tmp_path / "out" / f"rd-{metric}.png").is_file()


@pytest.mark.parametrize(
    "head, message",
    [
        ('metrics = ["haarpsi", "sharpness"]\n', "metrics: unknown metric(s) sharpness"),
        ('metrics = "haarpsi"\n', "metrics must be a list of metric names"),
        ('bd_metric = "dB"\n', "unknown metric 'dB'"),
        ("bd_metric = 3\n", "bd_metric must be a metric name"),
    ],
)
def test_metric_spec_errors_are_one_line(tmp_path, data, head, message):
    body = head + '[data]\neval = "data/d.npz"\n[classical]\nwebp = [5]\n'
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_spec(write_spec(tmp_path, body))
    assert "\n" not in str(err.value)


def test_learned_points_get_the_metrics_and_a_new_cache_key(tmp_path, data):
    from test_bench import TINY_CONV, StandInTrainer

    head = '[data]\ntrain = { path = "data/d.npz", stop = 16 }\neval = { path = "data/d.npz", start = -4 }\n'
    head += f'[budget]\nmax_steps = 1\n[[model]]\nrecipe = "conv-mse"\nset = {TINY_CONV}\n[classical]\nwebp = [50]\n'
    plain = run_sweep(write_spec(tmp_path, head), tmp_path / "out", train_fn=StandInTrainer())
    assert "vsi" not in plain.curves["conv-mse"]["points"][0].summary
    spec = write_spec(tmp_path, 'metrics = ["vsi"]\n' + head, "with.toml")
    res = run_sweep(spec, tmp_path / "out", train_fn=StandInTrainer())
    point = res.curves["conv-mse"]["points"][0]
    assert not point.cached and 0 < point.summary["vsi"] <= 1  # same checkpoint, evaluated again with VSI
    assert 0 < res.curves["WebP"]["points"][0].summary["vsi"] <= 1
    entry = json.loads((tmp_path / "out" / "curves" / "conv-mse.json").read_text())
    assert entry["results"]["vsi-rgb"] == [pytest.approx(point.summary["vsi"])]


def test_lpips_in_a_spec_needs_its_backbone_before_any_work(tmp_path, data, monkeypatch):
    import torch

    from rdkit_ae.evaluation import learned_metrics

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(learned_metrics.ENV, raising=False)
    body = 'metrics = ["lpips"]\n[data]\neval = "data/d.npz"\n[classical]\nwebp = [5]\n'
    with pytest.raises(SpecError, match="metrics: LPIPS needs torchvision's ImageNet AlexNet") as err:
        load_spec(write_spec(tmp_path, body))
    assert "\n" not in str(err.value)
    (tmp_path / "alex.pth").write_bytes(b"x")
    monkeypatch.setenv(learned_metrics.ENV, str(tmp_path / "alex.pth"))
    assert load_spec(write_spec(tmp_path, body)).eval_data.metrics == ("lpips",)
