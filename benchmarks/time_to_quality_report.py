"""Time to quality: the report of the time-to-quality sweeps (run by `rdkit bench`), against WebP.

Reads the output folders of ``benchmarks/time_to_quality.toml`` (``--budgets``)
and ``benchmarks/time_to_quality_ablations.toml`` (``--ablations``) and writes
into ``--out`` (default ``benchmarks/results/time_to_quality``):
``results.json`` (WebP and every curve: steps, BD-rate and BD-PSNR against
WebP over the spec's ``bd_window``, PSNR at 2.0 bpp = CR 12), ``table.md``,
``rd.png`` (the budgets), ``ablations.png`` and ``psnr_vs_minutes.png``.
Rates are whole files: ``.rdk`` files (container included) for the learned
curves, WebP files for WebP. Curves already in ``--out/results.json`` that the
sweeps given do not hold are kept by name (``--fresh`` drops them), provided
they were measured against the same WebP curve.

    rdkit bench benchmarks/time_to_quality.toml --out runs/ttq                      # ~55 min on 2 cores
    rdkit bench benchmarks/time_to_quality_ablations.toml --out runs/ttq-ablations  # ~75 min
    python benchmarks/time_to_quality_report.py --budgets runs/ttq --ablations runs/ttq-ablations
    python benchmarks/time_to_quality_report.py            # redraw from the committed results.json

``--keep DIR`` copies every curve's checkpoint to ``DIR/<curve name>.pt``
(e.g. ``fast-vr-all-levers-on.pt`` for ``benchmarks/held_out.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from rdkit_ae.evaluation.bdrate import bjontegaard, psnr_at
from rdkit_ae.evaluation.plots import plot_rd
from rdkit_ae.files import write_json
from rdkit_ae.machine import machine_summary
from rdkit_ae.text import fmt

ROOT = Path(__file__).resolve().parents[1]
CR12_BPP = 2.0
WINDOW = (1.0, 3.0)  # when the sweep names none (results written before sweeps carried it)
# The data of results written before reports recorded it (by the script this report replaced).
OLD_DATA = {"recipes": ["fast-vr"], "train": "dev.npz images 0-2499", "eval": "2500-2999"}
BASE = "all levers on"  # the ablation every other is compared with


def _threads_and_jobs(executor: str | None, threads: int) -> tuple[int | None, int | None]:
    """(threads per training, trainings at a time) from sweep.json's executor description."""
    if m := re.match(r"(\d+) local job\(s\) x (\d+) thread", executor or ""):
        return int(m[2]), int(m[1])
    if m := re.search(r"in this process, (\d+) thread", executor or ""):
        return int(m[1]), 1
    return (threads, 1) if (executor or "").startswith("in this process") else (None, None)


def _inside_run(point: dict) -> Path:
    return Path(point["checkpoint"]).relative_to(Path(point["run_dir"]))


def keep_checkpoints(rows: list[dict], folder: Path) -> None:
    """Copy each curve's checkpoint(s) to ``folder/<curve name>.pt`` (``-1``, ``-2``, ... for several trainings)."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        slug = "".join(c if c.isalnum() else "-" for c in r["name"]).strip("-")
        paths = r.get("checkpoints", [])
        for j, path in enumerate(paths):
            shutil.copyfile(path, folder / (slug + (f"-{j}" if len(paths) > 1 else "") + ".pt"))


def read_sweep(folder: Path, kind: str) -> tuple[dict, list[dict], dict]:
    """(WebP curve, one row per learned curve, data description) of an `rdkit bench` output folder."""
    sweep = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    entries = {e["name"]: e for e in json.loads((folder / "results.json").read_text(encoding="utf-8"))}
    with (folder / "results.csv").open(encoding="utf-8") as f:
        points = list(csv.DictReader(f))
    if sweep.get("anchor") not in entries:
        sys.exit(f"{folder}: no {sweep.get('anchor')} curve in results.json (has the sweep finished?)")
    webp = {k: entries[sweep["anchor"]]["results"][k] for k in ("bpp", "psnr-rgb")}
    threads, jobs = _threads_and_jobs(sweep.get("executor"), sweep["machine"].get("torch_threads"))
    rows = []
    for name, model in sweep["models"].items():
        if name not in entries:
            print(f"{folder}: {name} has no points (failed or not run yet); left out", file=sys.stderr)
            continue
        r = entries[name]["results"]
        runs = list({p["run_dir"]: p for p in points if p["curve"] == name}.values())  # one row per training
        rows.append(
            {
                "kind": kind,
                "name": name,
                "minutes": model["budget"]["time_budget"] * model["trainings"],
                "steps": sum(int(p["steps"] or 0) for p in runs),
                "train_s": sum(float(p["train_seconds"] or 0) for p in runs),
                "trainings": model["trainings"],
                "threads": threads,
                "jobs": jobs,
                "machine": machine_summary(sweep["machine"]),
                # each training's checkpoint in this sweep folder (results.csv names them relative to the spec)
                "checkpoints": [str(folder / "runs" / Path(p["run_dir"]).name / _inside_run(p)) for p in runs],
                "results": {
                    "bpp": r.get("container-bpp", r["bpp"]),
                    "psnr-rgb": r["psnr-rgb"],
                    "lambda": r.get("lambda", []),
                },
            }
        )
    recipes = sorted({m["recipe"] for m in sweep["models"].values()})
    data = {"recipes": recipes, "train": sweep["train_data"], "eval": sweep["eval_data"]}
    data["window"] = sweep.get("bd_window") or WINDOW
    return webp, rows, data


def measure(row: dict, webp: dict, window: tuple[float, float]) -> dict:
    """The row with its BD figures against WebP over ``window`` and the PSNR of both at 2.0 bpp."""
    c = row["results"]
    bd = bjontegaard(webp["bpp"], webp["psnr-rgb"], c["bpp"], c["psnr-rgb"], window=window)
    return {
        **row,
        "bd_rate_vs_webp": bd.bd_rate,
        "bd_psnr_vs_webp": bd.bd_psnr,
        "bd_method": bd.method,
        "bd_notes": bd.notes,
        "psnr_at_2bpp": psnr_at(c["bpp"], c["psnr-rgb"], CR12_BPP),
        "webp_psnr_at_2bpp": psnr_at(webp["bpp"], webp["psnr-rgb"], CR12_BPP),
    }


def _unit(value: float | None, spec: str, unit: str) -> str:
    return fmt(value, spec) + (unit if value is not None else "")


def table_rows(rows: list[dict], base: dict | None) -> list[str]:
    lines = []
    for r in rows:
        b = r["results"]["bpp"]
        delta = ""
        if base is not None:
            d = None
            if r is not base and None not in (r["bd_rate_vs_webp"], base["bd_rate_vs_webp"]):
                d = r["bd_rate_vs_webp"] - base["bd_rate_vs_webp"]
            delta = f" {fmt(d, '+.1f')} |"
        lines.append(
            f"| {r['name']} | {r['minutes']:g} | {r.get('threads') or '?'} x {r.get('jobs') or '?'} | {r['steps']:,} "
            f"| {_unit(r['bd_rate_vs_webp'], '+.1f', '%')} |{delta} {_unit(r['bd_psnr_vs_webp'], '+.2f', ' dB')} "
            f"| {fmt(r['psnr_at_2bpp'], '.2f')} ({fmt(r['webp_psnr_at_2bpp'], '.2f')}) | {min(b):.2f}-{max(b):.2f} |"
        )
    return lines


def write_table(path: Path, rows: list[dict], data: dict) -> None:
    lo, hi = data["window"]
    threads = re.compile(r", \d+ threads?( x \d+ jobs?)?")  # the machine, not how a row used it
    machines = sorted({threads.sub("", str(r["machine"])) for r in rows if r.get("machine")})
    header = (
        f"Time to quality: `{'`, `'.join(data['recipes'])}` trained on {data['train']}, "
        f"evaluated on {data['eval']} (real .rdk files, container "
        f"included) against WebP (method 6) on the same images. Budgets in wall-clock minutes of training; "
        f"machine: {'; '.join(machines) or '?'}. `threads x jobs`: each training's threads x trainings at a time "
        "(steps differ between the two settings)."
    )
    cols = f"| curve | budget (min) | threads x jobs | steps | BD-rate vs WebP, {lo:g}-{hi:g} bpp |{{}} BD-PSNR "
    cols += "| PSNR at 2.0 bpp (WebP) | bpp range |"
    budgets = sorted((r for r in rows if r["kind"] == "budget"), key=lambda r: r["minutes"])
    ablations = [r for r in rows if r["kind"] == "ablation"]
    lines = [header, ""]
    if budgets:
        lines += ["## Budgets", "", cols.format(""), "|---" * 8 + "|", *table_rows(budgets, None), ""]
    if ablations:
        base = next((r for r in ablations if r["name"].endswith(BASE)), None)
        lines += ["## Ablations: each lever switched off in turn", ""]
        lines += [cols.format(" change vs all on (points) |"), "|---" * 9 + "|", *table_rows(ablations, base), ""]
    notes = sorted({n for r in rows for n in r["bd_notes"]})
    if notes:
        lines += ["Notes: " + "; ".join(notes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(out: Path, rows: list[dict], webp: dict) -> None:
    anchor = {"name": "WebP (method 6)", "results": webp}
    budgets = sorted((r for r in rows if r["kind"] == "budget"), key=lambda r: r["minutes"])
    for rows_, name, title in ((budgets, "rd.png", "by training budget"), (None, "ablations.png", "ablations")):
        rows_ = rows_ if rows_ is not None else [r for r in rows if r["kind"] == "ablation"]
        if rows_:
            kinds = {anchor["name"]: "classical"}
            plot_rd([anchor, *rows_], out / name, title=f"Time to quality, {title}", kinds=kinds, metrics=["psnr-rgb"])
    if budgets:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.2, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        mins = [r["minutes"] for r in budgets]
        psnr = [np.nan if r["psnr_at_2bpp"] is None else r["psnr_at_2bpp"] for r in budgets]  # None: 2 bpp not reached
        ax.plot(mins, psnr, "o-", label="learned, at 2.0 bpp")
        if budgets[0]["webp_psnr_at_2bpp"] is not None:
            ax.axhline(budgets[0]["webp_psnr_at_2bpp"], color="k", ls="--", label="WebP at 2.0 bpp")
        ax.set(xlabel="training budget (wall-clock minutes)", ylabel="PSNR at 2.0 bpp (dB)", xticks=mins)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(out / "psnr_vs_minutes.png", dpi=120)


def previous(path: Path, fresh: bool) -> tuple[dict | None, dict[str, dict], dict]:
    """The WebP curve, curves by name and data of an earlier report (its results.json), unless ``fresh``."""
    if fresh or not path.is_file():
        return None, {}, {}
    old = json.loads(path.read_text(encoding="utf-8"))
    machine = old.get("machine", {}).get("summary")  # results written before curves carried their own
    rows = {r["name"]: {"kind": "budget", "machine": machine, **r} for r in old["curves"]}
    return old["webp"], rows, old.get("data", {})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", type=Path, action="append", default=[], help="output folder of the budgets sweep")
    ap.add_argument("--ablations", type=Path, action="append", default=[], help="output folder of the ablations")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "time_to_quality")
    ap.add_argument("--fresh", action="store_true", help="forget the curves already in --out/results.json")
    ap.add_argument("--keep", type=Path, default=None, help="copy the sweeps' checkpoints here, named by curve")
    args = ap.parse_args(argv)
    webp, rows, data = previous(args.out / "results.json", args.fresh)
    data = {**OLD_DATA, "window": WINDOW, **data}
    for kind, folders in (("budget", args.budgets), ("ablation", args.ablations)):
        for folder in folders:
            anchor, new, data = read_sweep(folder, kind)
            same = webp is None or (
                len(webp["bpp"]) == len(anchor["bpp"]) and np.allclose(webp["bpp"], anchor["bpp"])
                and np.allclose(webp["psnr-rgb"], anchor["psnr-rgb"])
            )  # fmt: skip
            if not same:
                sys.exit(f"{folder}: measured on other images than {args.out} (the WebP curves differ); use --fresh")
            webp = anchor
            rows.update({r["name"]: r for r in new})
            if args.keep is not None:
                keep_checkpoints(new, args.keep)
    if webp is None:
        sys.exit(
            f"nothing to report: give --budgets / --ablations sweep folders ({args.out / 'results.json'} is absent)"
        )
    window = (float(data["window"][0]), float(data["window"][1]))
    # checkpoint paths are this machine's: used for --keep, not written
    measured = [measure({k: v for k, v in r.items() if k != "checkpoints"}, webp, window) for r in rows.values()]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"webp": webp, "data": data, "curves": measured})
    write_table(args.out / "table.md", measured, data)
    plot(args.out, measured, webp)
    print((args.out / "table.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
