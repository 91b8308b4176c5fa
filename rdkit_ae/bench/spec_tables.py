"""Parsers for the tables of a sweep spec, each raising a one-line :class:`SpecError` naming file and key."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdkit_ae.bench.spec_targets import target_bpps
from rdkit_ae.codec.container import rate_value
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.classic import CODECS, available, get_codec
from rdkit_ae.evaluation.padding import DEFAULT_PAD, PAD_MODES
from rdkit_ae.model import build_model
from rdkit_ae.recipe import Recipe, load_recipe, parse_override

INT_BUDGET_KEYS = ("epochs", "max_steps", "limit_train", "limit_val")
BOOL_BUDGET_KEYS = ("fit_schedule",)  # size the plan to time_budget (rdkit_ae.training.fit_schedule)
BUDGET_KEYS = (*INT_BUDGET_KEYS, "time_budget", "val_fraction", *BOOL_BUDGET_KEYS)
MODEL_KEYS = ("recipe", "name", "set", "grid", "points", "budget", "rates", "lambdas", "targets")
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


class SpecError(RdkitError):
    """A sweep spec that cannot be read or is inconsistent."""


@dataclass
class DataSpec:
    """An image source (anything ``--data`` takes) with an optional [start:stop) slice.

    ``pad`` (the evaluation images' only: [eval].pad) is how a learned model's
    evaluation pads them; it travels with the images to every evaluation job.
    """

    path: str
    start: int | None = None
    stop: int | None = None
    split: str = "all"
    pad: str = DEFAULT_PAD
    metrics: tuple[str, ...] = ()  # the evaluation images' only: top-level metrics = [...] (perceptual ones)

    def describe(self, short: bool = False, base: Path | None = None) -> str:
        """``path[start:stop] (split)``; the path relative to ``base`` when given, its name when ``short``."""
        path = self.path
        if short:
            path = Path(path).name
        elif base is not None and Path(path).is_absolute():
            path = os.path.relpath(path, base)
        sl = f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"
        return f"{path}{sl if (self.start, self.stop) != (None, None) else ''}" + (
            f" ({self.split})" if self.split != "all" else ""
        )


@dataclass(frozen=True)
class RatePoint:
    """One operating point of a variable-rate model: how the spec named it, and its rate position."""

    label: str  # "rate=2" or "lambda=0.0128"
    position: float  # the rate position t the model is evaluated at
    bpp: float | None = None  # targets = { bpp = [...] }: rate control per image to this bpp (rdkit_ae.bench.targets)


@dataclass
class Point:
    """One training; a variable-rate model's ``rates`` are its evaluations (one each), else it has one."""

    curve: str
    label: str  # e.g. "quantizer.bits=4, encoder.latent_channels=8"
    recipe: Recipe  # resolved
    overrides: dict[str, Any]
    budget: dict[str, Any]
    rates: tuple[RatePoint, ...] = ()


@dataclass
class ModelCurve:
    name: str
    recipe: str
    points: list[Point]


@dataclass
class CodecSweep:
    codec: str  # key in rdkit_ae.evaluation.classic.CODECS
    qualities: list[int]
    options: dict[str, Any]


def _unknown(keys: Any, allowed: tuple[str, ...], where: str, source: str) -> None:
    unknown = set(keys) - set(allowed)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise SpecError(f"{source}: {where}: unknown key(s) {names}; allowed: {', '.join(allowed)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def resolve_path(value: str, base: Path) -> str:
    """Expand ~ and $VARS; relative paths are relative to the spec file's folder."""
    s = os.path.expandvars(os.path.expanduser(value))
    if s == "cifar10" or Path(s).is_absolute():
        return s
    return str((base / s).resolve())


def string_value(raw: dict[str, Any], key: str, default: str, source: str, empty: bool = False) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise SpecError(f"{source}: {key} must be a{'' if empty else ' non-empty'} string, got {value!r}")
    return value


def data_spec(value: Any, base: Path, where: str, source: str) -> DataSpec:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise SpecError(
            f"{source}: {where} must be a path string or a table with 'path' (and optional start, stop, split)"
        )
    _unknown(value, ("path", "start", "stop", "split"), where, source)
    for key in ("start", "stop"):
        if key in value and not _is_int(value[key]):
            raise SpecError(
                f"{source}: {where}.{key} must be an integer (Python slice semantics, negatives count from the end)"
            )
    split = value.get("split", "all")
    if split not in ("all", "train", "val"):
        raise SpecError(f"{source}: {where}.split must be all, train or val")
    return DataSpec(resolve_path(value["path"], base), value.get("start"), value.get("stop"), split)


def budget_table(value: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{source}: {where} must be a table")
    _unknown(value, BUDGET_KEYS, where, source)
    for k, v in value.items():
        if k in BOOL_BUDGET_KEYS:
            if not isinstance(v, bool):
                raise SpecError(f"{source}: {where}.{k} must be true or false, got {v!r}")
            continue
        if k in INT_BUDGET_KEYS and not (_is_int(v) and v > 0):
            raise SpecError(f"{source}: {where}.{k} must be a positive integer, got {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise SpecError(f"{source}: {where}.{k} must be a positive number, got {v!r}")
        if k == "val_fraction" and v >= 1:
            raise SpecError(f"{source}: {where}.val_fraction must be between 0 and 1, got {v!r}")
    return dict(value)


def check_point_budget(budget: dict[str, Any], where: str, source: str) -> None:
    """A point's whole budget ([budget] and its own): ``fit_schedule`` needs ``time_budget`` and no ``epochs``."""
    if budget.get("fit_schedule"):
        if "time_budget" not in budget:
            raise SpecError(f"{source}: {where}: fit_schedule = true sizes the plan to a time_budget: give one")
        if "epochs" in budget:
            raise SpecError(f"{source}: {where}: fit_schedule = true sets the planned epochs: drop epochs")


def bd_window_value(value: Any, source: str) -> tuple[float, float] | None:
    """``bd_window = [low, high]`` (bpp): the BD figures use each curve's points in it and the nearest outside."""
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
    if not ok or not 0 <= value[0] < value[1]:
        raise SpecError(f"{source}: bd_window must be [low, high] rates in bpp with 0 <= low < high, got {value!r}")
    return float(value[0]), float(value[1])


def eval_table(value: Any, source: str) -> tuple[int, str]:
    """[eval] -> (batch_size, device); ``pad`` is read by :func:`eval_pad`."""
    if not isinstance(value, dict):
        raise SpecError(f"{source}: [eval] must be a table (batch_size, device, pad)")
    _unknown(value, ("batch_size", "device", "pad"), "[eval]", source)
    batch_size = value.get("batch_size", 64)
    if not _is_int(batch_size) or batch_size < 1:
        raise SpecError(f"{source}: [eval].batch_size must be a positive integer, got {batch_size!r}")
    device = value.get("device", "cpu")
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise SpecError(f"{source}: [eval].device must be cpu, mps, cuda or cuda:N, got {device!r}")
    return batch_size, device


def eval_pad(value: Any, source: str) -> str:
    """[eval].pad: how evaluation pads images (rdkit_ae.evaluation.padding); default replicate."""
    pad = value.get("pad", DEFAULT_PAD) if isinstance(value, dict) else DEFAULT_PAD
    if pad not in PAD_MODES:
        raise SpecError(f"{source}: [eval].pad must be {' or '.join(PAD_MODES)}, got {pad!r}")
    return pad


def _format_value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _points_of(entry: dict[str, Any], where: str, source: str) -> list[dict[str, Any]]:
    """Expand ``grid`` (Cartesian product) and/or ``points`` (explicit list) into override dicts."""
    grid = entry.get("grid", {})
    explicit = entry.get("points", [])
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise SpecError(
            f'{source}: {where}.grid must map dotted keys to non-empty arrays, e.g. "quantizer.bits" = [4, 8]'
        )
    if not isinstance(explicit, list) or not all(isinstance(p, dict) for p in explicit):
        raise SpecError(f"{source}: {where}.points must be an array of tables of dotted keys")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else []
    out: list[dict[str, Any]] = combos + [dict(p) for p in explicit]
    return out or [{}]


def _model_curve(entry: Any, where: str, base: Path, budget: dict[str, Any], source: str) -> ModelCurve:
    if not isinstance(entry, dict) or not isinstance(entry.get("recipe"), str):
        raise SpecError(f'{source}: {where} needs recipe = "<zoo name or path>"')
    _unknown(entry, MODEL_KEYS, where, source)
    local = base / entry["recipe"]
    recipe_ref = str(local) if local.is_file() else entry["recipe"]
    fixed_items = entry.get("set", [])
    if not isinstance(fixed_items, list) or not all(isinstance(s, str) for s in fixed_items):
        raise SpecError(f'{source}: {where}.set must be an array of "dotted.key=value" strings')
    name = entry.get("name", Path(entry["recipe"]).stem)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{source}: {where}.name must be a non-empty string, got {name!r}")
    try:
        fixed = dict(parse_override(s) for s in fixed_items)
    except RdkitError as exc:
        raise SpecError(f"{source}: {where}.set: {exc}") from None
    point_budget = {**budget, **budget_table(entry.get("budget", {}), f"{where}.budget", source)}
    check_point_budget(point_budget, f"{where} ({name})", source)
    asked = _rates_asked(entry, where, source)
    points = []
    for overrides in _points_of(entry, where, source):
        merged = {**fixed, **overrides}
        try:
            recipe = load_recipe(recipe_ref, merged)
            model = build_model(recipe)  # fail now on bad plugin parameters, not an hour into the sweep
        except RdkitError as exc:
            raise SpecError(f"{source}: {where} ({name}): {exc}") from None
        label = ", ".join(f"{k}={_format_value(v)}" for k, v in overrides.items()) or "default"
        rates = _rate_points(model, asked, f"{source}: {where} ({name})")
        points.append(Point(name, label, recipe, merged, point_budget, rates))
    return ModelCurve(name, entry["recipe"], points)


def _rates_asked(entry: dict[str, Any], where: str, source: str) -> tuple[str, list[float]] | None:
    """``rates = [...]``, ``lambdas = [...]`` or ``targets = {bpp = [...]}``: (kind, values); None if none."""
    given = [key for key in ("rates", "lambdas", "targets") if key in entry]
    if not given:
        return None
    if len(given) > 1:
        raise SpecError(f"{source}: {where}: give either {given[0]} or {given[1]}, not both")
    if "grid" in entry or "points" in entry:
        raise SpecError(
            f"{source}: {where}: {given[0]} (one training, several operating points) cannot be combined with "
            "grid or points (several trainings): give the variable-rate model its own [[model]] entry"
        )
    key = given[0]
    if key == "targets":  # rate control per image to each bpp (rdkit_ae.bench.targets)
        return "bpp", target_bpps(entry[key], f"{source}: {where}.targets", SpecError)
    values = entry[key]
    ok = isinstance(values, list) and values and all(_is_number(v) for v in values)
    if not ok or len(set(values)) != len(values):
        raise SpecError(f"{source}: {where}.{key} must be a non-empty array of distinct numbers, got {values!r}")
    return ("rate" if key == "rates" else "lambda"), [float(v) for v in values]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rate_points(model: Any, asked: tuple[str, list[float]] | None, where: str) -> tuple[RatePoint, ...]:
    """The operating points asked for, checked against the model's trained range now (before any training)."""
    if asked is None:
        return ()
    kind, values = asked
    if not model.variable_rate:
        raise SpecError(
            f"{where}: {'target' if kind == 'bpp' else kind}s need a variable-rate model (e.g. quantizer 'gain'), "
            "but this recipe has a single rate"
        )
    if kind == "bpp":
        return tuple(RatePoint(f"bpp={v:g}", -1.0, bpp=v) for v in values)
    points = []
    for v in values:
        try:
            t = model.set_rate(lmbda=v) if kind == "lambda" else model.set_rate(index=v)
        except RdkitError as exc:
            raise SpecError(f"{where}: {exc}") from None
        points.append(RatePoint(f"{kind}={v:g}", rate_value(t)))
    return tuple(points)


def model_curves(entries: Any, base: Path, budget: dict[str, Any], source: str) -> list[ModelCurve]:
    if not isinstance(entries, list):
        raise SpecError(f"{source}: [[model]] entries must be an array of tables")
    return [_model_curve(entry, f"[[model]] #{i + 1}", base, budget, source) for i, entry in enumerate(entries)]


def _qualities(key: str, value: Any, source: str) -> list[int]:
    qualities = list(get_codec(key).default_qualities) if value is True else value
    if not isinstance(qualities, list) or not qualities or not all(_is_int(q) and 0 <= q <= 100 for q in qualities):
        raise SpecError(
            f"{source}: [classical] {key} must be true, false, an array of qualities 0..100, "
            "or a table {{qualities = [...], <Pillow save option> = ...}}"
        )
    return sorted(set(qualities))


def codec_sweeps(table: Any, source: str) -> tuple[list[CodecSweep], list[str]]:
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [classical] must be a table, e.g. webp = [10, 50, 90]")
    sweeps, skipped = [], []
    for key, value in table.items():
        if key not in CODECS:
            raise SpecError(f"{source}: [classical] unknown codec '{key}'; known: {', '.join(CODECS)}")
        options: dict[str, Any] = {}
        if isinstance(value, dict):
            options = {k: v for k, v in value.items() if k != "qualities"}
            value = value.get("qualities", True)
        if value is False:
            continue
        qualities = _qualities(key, value, source)
        if not available(key):
            skipped.append(f"{get_codec(key).label}: not supported by this Pillow build; skipped")
            continue
        sweeps.append(CodecSweep(key, qualities, options))
    return sweeps, skipped


def read_compressai_json(path: Path, name: str | None = None, base: Path | None = None) -> dict[str, Any]:
    """A CompressAI results file as ``{"name", "description", "results"}`` (``results`` may be the top level).

    Without a description the file's path stands in, relative to ``base`` when given (it lands in the reports).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable CompressAI results JSON ({exc})") from None
    results = data.get("results", data) if isinstance(data, dict) else None
    bpp = results.get("bpp") if isinstance(results, dict) else None
    if not isinstance(results, dict) or not isinstance(bpp, list) or not bpp:
        raise SpecError(f"{path}: not a CompressAI results JSON (needs results.bpp as a list)")
    clean: dict[str, list[float]] = {}
    for key, values in results.items():
        if isinstance(values, list) and len(values) == len(bpp) and all(isinstance(v, (int, float)) for v in values):
            clean[key] = [float(v) for v in values]
    if "psnr-rgb" not in clean:
        raise SpecError(f"{path}: CompressAI results need a 'psnr-rgb' list as long as 'bpp'")
    return {
        "name": name or data.get("name") or path.name.split(".")[0],
        "description": data.get("description", os.path.relpath(path, base) if base else str(path)),
        "results": clean,
    }


def external_curves(entries: Any, base: Path, source: str) -> list[dict[str, Any]]:
    """[[external]]: CompressAI results files, read now (a bad one fails before any work)."""
    if not isinstance(entries, list):
        raise SpecError(f'{source}: [[external]] must be an array of tables with path = "<CompressAI results .json>"')
    out = []
    for i, entry in enumerate(entries):
        where = f"[[external]] #{i + 1}"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise SpecError(f'{source}: {where} needs path = "<CompressAI results .json>"')
        _unknown(entry, ("path", "name"), where, source)
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise SpecError(f"{source}: {where}.name must be a non-empty string, got {name!r}")
        out.append(read_compressai_json(Path(resolve_path(entry["path"], base)), name, base))
    return out


def env_table(table: Any, base: Path, source: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """[env]: NAME = "value", or NAME = { path = "relative/to/spec" } for a file path -> (values, path names)."""
    if not isinstance(table, dict):
        raise SpecError(f'{source}: [env] must be a table of NAME = "value" or NAME = {{ path = "..." }}')
    out, paths = {}, []
    for name, value in table.items():
        if isinstance(value, dict) and set(value) == {"path"} and isinstance(value["path"], str):
            value = resolve_path(value["path"], base)
            paths.append(str(name))
        elif not isinstance(value, str):
            raise SpecError(f'{source}: [env] {name} must be a string or {{ path = "..." }}')
        out[str(name)] = value
    return out, tuple(paths)
