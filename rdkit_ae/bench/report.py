"""A sweep's reports: results.json/csv, curves/*.json, rd.png, bd_rate.json/md and sweep.json.

Paths in the reports are written relative to the spec's folder (as paths in
the spec are), so committed results name no folder of the machine that made
them. ``results.json`` lists every curve; ``curves/<name>.json`` holds one
curve each in CompressAI's results schema, the files
``python -m compressai.utils.plot -f ...`` reads (it takes one curve per file).
A learned curve's description names the recipe overrides its points used.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from rdkit_ae.bench.spec import SweepSpec, effective_env
from rdkit_ae.evaluation.bdrate import bjontegaard, bjontegaard_version
from rdkit_ae.evaluation.perceptual import metric_for
from rdkit_ae.evaluation.plots import plot_rd
from rdkit_ae.evaluation.results import PERCEPTUAL_KEYS, compressai_entry, write_records_csv
from rdkit_ae.files import atomic_write_text, write_json
from rdkit_ae.machine import machine_info

Curves = dict[str, dict[str, Any]]  # name -> {"kind", "description", "points": [PointResult]}

CSV_COLUMNS = (
    "curve",
    "kind",
    "point",
    "quality",
    "n_images",
    "bytes",
    "bpp",
    "cr",
    "psnr",
    "psnr_of_mean_mse",
    "ssim",
    "ms_ssim",
    "encoding_time",
    "decoding_time",
    "nominal_bpp",
    "container_bpp",
    "train_seconds",
    "steps",
    "cached",
    "run_dir",
    "checkpoint",
    "overrides",
)


def relative(path: str | Path, base: Path) -> str:
    """``path`` relative to ``base`` when it is absolute ("" stays "")."""
    if not path or not Path(path).is_absolute():
        return str(path)
    return os.path.relpath(path, base)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "curve"


def write_reports(
    out: Path, spec: SweepSpec, curves: Curves, notes: list[str], executor: str | None = None
) -> dict[str, Path]:
    """Write every report into ``out``; returns {file name: path}. ``executor``: how the jobs ran (sweep.json)."""
    files = {name: out / name for name in ("results.json", "results.csv", "bd_rate.json", "bd_rate.md", "rd.png")}
    entries = []
    for name, c in curves.items():
        if c["points"]:
            padding = spec.eval_data.pad if c["kind"] == "learned" else None
            entry = compressai_entry(name, curve_description(c), [p.summary for p in c["points"]], padding)
            entries.append(entry)
            write_json(out / "curves" / f"{slug(name)}.json", entry)
    write_json(files["results.json"], entries)
    write_records_csv(files["results.csv"], csv_rows(curves, spec.base))
    bd = bd_table(spec.anchor, curves, spec.bd_window, spec.bd_metric)
    write_json(files["bd_rate.json"], bd)
    atomic_write_text(files["bd_rate.md"], bd_markdown(spec, bd, curves, notes))
    n_images = next(
        (p.summary.get("n_images") for c in curves.values() for p in c["points"] if p.summary.get("n_images")), "?"
    )
    plot_rd(
        entries,
        files["rd.png"],
        title=f"{spec.name}: {spec.eval_data.describe(short=True)} ({n_images} images)",
        kinds={n: c["kind"] for n, c in curves.items()},
    )
    for name in spec.eval_data.metrics:  # one RD plot per perceptual metric: rd-haarpsi.png, ...
        files[f"rd-{name}.png"] = plot_rd(
            entries,
            out / f"rd-{name}.png",
            title=f"{spec.name}: {spec.eval_data.describe(short=True)} ({n_images} images)",
            kinds={n: c["kind"] for n, c in curves.items()},
            metrics=(metric_for(name).compressai,),
        )
    files["sweep.json"] = out / "sweep.json"
    write_json(files["sweep.json"], sweep_info(spec, notes, executor))
    return files


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def curve_description(curve: dict[str, Any]) -> str:
    """A learned curve's description with the overrides its points used (the recipe's own text describes
    the recipe before them): ``"factorized [encoder.N=128, encoder.stages=4]; per point: quantizer.lmbda;
    base recipe: ..."``. Other curves keep theirs."""
    points = curve["points"]
    base = curve["description"]
    if curve["kind"] != "learned" or not any(p.overrides for p in points):
        return base
    first = points[0].overrides
    common = {k: v for k, v in first.items() if all(k in p.overrides and p.overrides[k] == v for p in points)}
    varied = list(dict.fromkeys(k for p in points for k in p.overrides if k not in common))
    recipe = next((p.recipe for p in points if p.recipe), "") or "recipe"
    text = recipe + (f" [{', '.join(f'{k}={_value(v)}' for k, v in common.items())}]" if common else "")
    if varied:
        text += f"; per point: {', '.join(varied)}"
    return text + (f"; base recipe: {base}" if base else "")


def csv_rows(curves: Curves, base: Path) -> list[dict[str, Any]]:
    """One row per point, in CSV_COLUMNS order; run folders and checkpoints relative to ``base``."""
    rows = []
    for name, c in curves.items():
        for p in c["points"]:
            s = p.summary
            row = {
                "curve": name,
                "kind": c["kind"],
                "point": p.label,
                "quality": p.quality,
                **{k: s.get(k) for k in CSV_COLUMNS if k in s},
                "train_seconds": p.train_seconds,
                "steps": p.steps,
                "cached": p.cached,
                "run_dir": relative(p.run_dir, base),
                "checkpoint": relative(p.checkpoint, base),
                "overrides": json.dumps(p.overrides) if p.overrides else "",
            }
            rows.append({k: row.get(k) for k in CSV_COLUMNS} | {k: s[k] for k in PERCEPTUAL_KEYS if k in s})
    return rows


def bd_table(
    anchor_name: str, curves: Curves, window: tuple[float, float] | None = None, metric: str = "psnr"
) -> dict[str, Any]:
    """BD-rate and BD-quality (``metric`` vs bpp, PSNR by default) of every curve against the anchor (over
    ``window`` bpp when given).

    A lower-is-better metric (MS-GMSD, MDSI, LPIPS) is negated before the fit, so the integrals run over the
    same quality interval and BD-rate < 0 still means fewer bits for the same quality; its ``bd_quality`` is
    given back in the metric's own units (test minus anchor: negative is better for such a metric).
    """
    info = metric_for(metric)
    bd: dict[str, Any] = {
        "anchor": anchor_name,
        "metric": info.compressai,
        "rate": "bpp",
        "library": f"bjontegaard {bjontegaard_version}",
        "curves": {},
    }
    if info.name != "psnr":
        bd["higher_is_better"] = info.higher_is_better
    if window is not None:
        bd["window"] = list(window)
    anchor = curves.get(anchor_name)
    if anchor is None or not anchor["points"]:
        bd["error"] = f"anchor '{anchor_name}' has no points"
        return bd
    sign = 1.0 if info.higher_is_better else -1.0
    ar, aq = _curve_values(anchor["points"], info.key, sign)
    for name, c in curves.items():
        if name == anchor_name or not c["points"]:
            continue
        rates, values = _curve_values(c["points"], info.key, sign)
        res = bjontegaard(ar, aq, rates, values, window=window).to_dict()
        if info.name != "psnr":
            quality = res.pop("bd_psnr")
            res["bd_quality"] = None if quality is None else sign * quality
        bd["curves"][name] = {"kind": c["kind"], "points": len(c["points"]), **res}
    return bd


def _curve_values(points: list[Any], key: str, sign: float) -> tuple[list[float], list[float]]:
    """``(bpp, sign * quality)`` of a curve's points; a point without the metric gets NaN (dropped, with a note)."""
    values = [p.summary.get(key) for p in points]
    return [p.summary["bpp"] for p in points], [float("nan") if v is None else sign * v for v in values]


def sweep_info(spec: SweepSpec, notes: list[str], executor: str | None = None) -> dict[str, Any]:
    """sweep.json: what was run, on what, where (paths relative to the spec's folder).

    ``models``: each learned curve's recipe, its trainings and their budget
    (the [budget] table merged with the curve's own); ``executor``: how this
    invocation ran its jobs (points taken from the cache ran earlier).
    """
    base = spec.base
    env = effective_env(spec)
    models = {
        m.name: {"recipe": m.recipe, "trainings": len(m.points), "budget": m.points[0].budget} for m in spec.models
    }
    return {
        "name": spec.name,
        "description": spec.description,
        "spec": str(spec.path) if not spec.path.is_absolute() else spec.path.name,
        "anchor": spec.anchor,
        "train_data": spec.train_data.describe(base=base),
        "eval_data": spec.eval_data.describe(base=base),
        "eval_pad": spec.eval_data.pad,
        "budget": spec.budget,
        "models": models,
        "bd_window": list(spec.bd_window) if spec.bd_window else None,
        "metrics": list(spec.eval_data.metrics),
        "bd_metric": spec.bd_metric,
        "seed": spec.seed,
        "env": {k: relative(v, base) if k in spec.env_paths else v for k, v in env.items()},
        "machine": machine_info(),
        "executor": executor,
        "notes": notes,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def bd_markdown(spec: SweepSpec, bd: dict[str, Any], curves: Curves, notes: list[str]) -> str:
    info = metric_for(bd.get("metric", "psnr-rgb"))
    if info.name == "psnr":
        label, unit, what = "PSNR", " (dB)", "quality: mean PSNR (RGB, MAX 255)"
    else:
        label, unit = info.name.upper(), ""
        better = "higher" if info.higher_is_better else "lower"
        what = f"quality: mean {label} (RGB; {better} is better)"
    lines = [
        f"# BD-rate: {spec.name}",
        "",
        f"Anchor: **{spec.anchor}**. Rate: bpp of real bitstreams / full files on "
        f"{spec.eval_data.describe(base=spec.base)}; "
        f"{what}. BD-rate < 0: fewer bits than the anchor for the same {label}; "
        + (
            "BD-PSNR > 0: higher PSNR at the same rate. "
            if info.name == "psnr"
            else f"BD-{label}: the mean {label} difference at the same rate (test minus anchor). "
        )
        + "Computed only over the range both curves cover, "
        f"with the bjontegaard package ({bd.get('library', 'bjontegaard')}); interpolation: "
        "cubic = VCEG-M33 cubic fit (4+ points per curve), pchip = piecewise cubic Hermite "
        "(JVET CTC; used below 4 points), akima = Akima spline.",
        "",
    ]
    if "window" in bd:
        lo, hi = bd["window"]
        lines += [f"Rate window: {lo:g}-{hi:g} bpp (each curve's points in it and the nearest outside each side).", ""]
    if "error" in bd:
        lines += [f"Not computed: {bd['error']}.", ""]
    lines += [
        f"| curve | kind | points | bpp range | {label} range{unit} | BD-rate | BD-{label}{unit} | "
        "interpolation | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    digits = 2 if info.name == "psnr" else 4
    for name, r in bd["curves"].items():
        pts = curves[name]["points"]
        bpps = [p.summary["bpp"] for p in pts]
        values = [v for v in (p.summary.get(info.key) for p in pts) if v is not None]
        span = f"{min(values):.{digits}f}-{max(values):.{digits}f}" if values else "n/a"
        delta = r.get("bd_psnr", r.get("bd_quality"))
        delta_text = "n/a" if delta is None else f"{delta:+.{digits + 1}f}"
        lines.append(
            f"| {name} | {r['kind']} | {r['points']} | {min(bpps):.3f}-{max(bpps):.3f} | "
            f"{span} | {_pct(r['bd_rate'])} | {delta_text} | {r['method']} | "
            f"{'; '.join(r['notes']) or '-'} |"
        )
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
