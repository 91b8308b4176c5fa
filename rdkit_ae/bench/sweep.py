"""``rdkit bench``: sweep recipes into rate-distortion curves beside classical codecs.

A sweep spec (TOML, see docs/evaluation.md) names recipes with grids of
overrides, a training budget and the evaluation images. :func:`run_sweep`
trains every point (or reuses a cached run), evaluates it with real bits,
runs Pillow's JPEG/WebP/AVIF on the same images, reads extra CompressAI
results files, and writes results.json/csv, rd.png and bd_rate.md/json.

Caching: a point's run folder is ``OUT/runs/<key>`` where ``key`` hashes the
resolved recipe digest, the training data (by content), the budget and the
seed; ``done.json`` marks a finished training. Evaluations and codec sweeps
are cached beside them, keyed by the evaluation images' content. An
interrupted sweep therefore resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import tomllib

from rdkit_ae.errors import RdkitError

CACHE_VERSION = 1  # bump when cached files change meaning
BUDGET_KEYS = ("epochs", "max_steps", "limit_train", "limit_val", "time_budget", "val_fraction")
TOP_KEYS = ("name", "description", "anchor", "seed", "data", "budget", "eval", "env", "model", "classical", "external")


class SpecError(RdkitError):
    """A sweep spec that cannot be read or is inconsistent."""


# -- the spec -----------------------------------------------------------------
@dataclass
class DataSpec:
    """An image source (anything ``--data`` takes) with an optional [start:stop) slice."""

    path: str
    start: int | None = None
    stop: int | None = None
    split: str = "all"

    def describe(self, short: bool = False) -> str:
        sl = f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"
        return (
            f"{Path(self.path).name if short else self.path}{sl if (self.start, self.stop) != (None, None) else ''}"
            + (f" ({self.split})" if self.split != "all" else "")
        )


@dataclass
class Point:
    curve: str
    label: str  # e.g. "quantizer.bits=4, encoder.latent_channels=8"
    recipe: Any  # resolved rdkit_ae.recipe.Recipe
    overrides: dict[str, Any]
    budget: dict[str, Any]


@dataclass
class ModelCurve:
    name: str
    recipe: str
    points: list[Point]


@dataclass
class CodecSweep:
    codec: str  # key in rdkit_ae.classic.CODECS
    qualities: list[int]
    options: dict[str, Any]


@dataclass
class SweepSpec:
    path: Path
    name: str
    description: str
    anchor: str
    seed: int
    train_data: DataSpec
    eval_data: DataSpec
    budget: dict[str, Any]
    eval_batch_size: int
    device: str
    models: list[ModelCurve]
    codecs: list[CodecSweep]
    externals: list[dict[str, Any]]  # CompressAI entries, already read
    skipped: list[str] = field(default_factory=list)  # notes, e.g. AVIF not supported
    env: dict[str, str] = field(default_factory=dict)  # variables for the trainings, where the user has not set them

    @property
    def points(self) -> list[Point]:
        return [p for m in self.models for p in m.points]

    def curve_names(self) -> list[str]:
        from rdkit_ae.evaluation.classic import get_codec

        return (
            [m.name for m in self.models]
            + [get_codec(c.codec).label for c in self.codecs]
            + [e["name"] for e in self.externals]
        )


def _resolve_path(value: str, base: Path) -> str:
    """Expand ~ and $VARS; relative paths are relative to the spec file's folder."""
    s = os.path.expandvars(os.path.expanduser(value))
    if s == "cifar10" or Path(s).is_absolute():
        return s
    return str((base / s).resolve())


def _data_spec(value: Any, base: Path, where: str, source: str) -> DataSpec:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise SpecError(
            f"{source}: {where} must be a path string or a table with 'path' (and optional start, stop, split)"
        )
    unknown = set(value) - {"path", "start", "stop", "split"}
    if unknown:
        raise SpecError(
            f"{source}: {where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: path, start, stop, split"
        )
    for key in ("start", "stop"):
        if key in value and (not isinstance(value[key], int) or isinstance(value[key], bool)):
            raise SpecError(
                f"{source}: {where}.{key} must be an integer (Python slice semantics, negatives count from the end)"
            )
    split = value.get("split", "all")
    if split not in ("all", "train", "val"):
        raise SpecError(f"{source}: {where}.split must be all, train or val")
    return DataSpec(_resolve_path(value["path"], base), value.get("start"), value.get("stop"), split)


def _budget(value: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{source}: {where} must be a table")
    unknown = set(value) - set(BUDGET_KEYS)
    if unknown:
        raise SpecError(
            f"{source}: {where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(BUDGET_KEYS)}"
        )
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise SpecError(f"{source}: {where}.{k} must be a positive number, got {v!r}")
    return dict(value)


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
    out = combos + [dict(p) for p in explicit]
    return out or [{}]


def _model_curves(entries: Any, base: Path, budget: dict[str, Any], source: str) -> list[ModelCurve]:
    from rdkit_ae.model import build_model
    from rdkit_ae.recipe import load_recipe, parse_override

    if not isinstance(entries, list):
        raise SpecError(f"{source}: [[model]] entries must be an array of tables")
    curves: list[ModelCurve] = []
    for i, entry in enumerate(entries):
        where = f"[[model]] #{i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("recipe"), str):
            raise SpecError(f'{source}: {where} needs recipe = "<zoo name or path>"')
        unknown = set(entry) - {"recipe", "name", "set", "grid", "points", "budget"}
        if unknown:
            raise SpecError(
                f"{source}: {where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: recipe, name, set, grid, points, budget"
            )
        recipe_ref = entry["recipe"]
        local = base / recipe_ref
        recipe_ref = str(local) if local.is_file() else recipe_ref
        fixed_items = entry.get("set", [])
        if not isinstance(fixed_items, list) or not all(isinstance(s, str) for s in fixed_items):
            raise SpecError(f'{source}: {where}.set must be an array of "dotted.key=value" strings')
        fixed = dict(parse_override(s) for s in fixed_items)
        point_budget = {**budget, **_budget(entry.get("budget", {}), f"{where}.budget", source)}
        name = entry.get("name", Path(entry["recipe"]).stem)
        points = []
        for overrides in _points_of(entry, where, source):
            merged = {**fixed, **overrides}
            try:
                recipe = load_recipe(recipe_ref, merged)
                build_model(recipe)  # fail now on bad plugin parameters, not an hour into the sweep
            except RdkitError as exc:
                raise SpecError(f"{source}: {where} ({name}): {exc}") from None
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in overrides.items()) or "default"
            points.append(Point(name, label, recipe, merged, point_budget))
        curves.append(ModelCurve(name, entry["recipe"], points))
    return curves


def _codec_sweeps(table: Any, source: str) -> tuple[list[CodecSweep], list[str]]:
    from rdkit_ae.evaluation.classic import CODECS, available, get_codec

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
        qualities = list(get_codec(key).default_qualities) if value is True else value
        if (
            not isinstance(qualities, list)
            or not qualities
            or not all(isinstance(q, int) and 0 <= q <= 100 for q in qualities)
        ):
            raise SpecError(
                f"{source}: [classical] {key} must be true, false, an array of qualities 0..100, "
                "or a table {{qualities = [...], <Pillow save option> = ...}}"
            )
        if not available(key):
            skipped.append(f"{get_codec(key).label}: not supported by this Pillow build; skipped")
            continue
        sweeps.append(CodecSweep(key, sorted(set(qualities)), options))
    return sweeps, skipped


def read_compressai_json(path: Path, name: str | None = None) -> dict[str, Any]:
    """A CompressAI results file as ``{"name", "description", "results"}`` (``results`` may be the top level)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable CompressAI results JSON ({exc})") from None
    results = data.get("results", data) if isinstance(data, dict) else None
    bpp = results.get("bpp") if isinstance(results, dict) else None
    if not isinstance(bpp, list) or not bpp:
        raise SpecError(f"{path}: not a CompressAI results JSON (needs results.bpp as a list)")
    clean: dict[str, list[float]] = {}
    for key, values in results.items():
        if isinstance(values, list) and len(values) == len(bpp) and all(isinstance(v, (int, float)) for v in values):
            clean[key] = [float(v) for v in values]
    if "psnr-rgb" not in clean:
        raise SpecError(f"{path}: CompressAI results need a 'psnr-rgb' list as long as 'bpp'")
    return {
        "name": name or data.get("name") or path.name.split(".")[0],
        "description": data.get("description", str(path)),
        "results": clean,
    }


def _env(table: Any, base: Path, source: str) -> dict[str, str]:
    """[env]: NAME = "value", or NAME = { path = "relative/to/spec" } for a file path."""
    if not isinstance(table, dict):
        raise SpecError(f'{source}: [env] must be a table of NAME = "value" or NAME = {{ path = "..." }}')
    out = {}
    for name, value in table.items():
        if isinstance(value, dict) and set(value) == {"path"} and isinstance(value["path"], str):
            value = _resolve_path(value["path"], base)
        elif not isinstance(value, str):
            raise SpecError(f'{source}: [env] {name} must be a string or {{ path = "..." }}')
        out[str(name)] = value
    return out


def effective_env(spec: "SweepSpec") -> dict[str, str]:
    """The [env] values a sweep's trainings see: the user's environment wins over the spec."""
    return {k: os.environ.get(k, v) for k, v in spec.env.items()}


@contextlib.contextmanager
def _spec_env(spec: "SweepSpec"):
    missing = {k: v for k, v in spec.env.items() if k not in os.environ}
    os.environ.update(missing)
    try:
        yield
    finally:
        for k in missing:
            os.environ.pop(k, None)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; relative paths are relative to the spec's folder."""
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise SpecError(f"sweep spec not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{source}: invalid TOML: {exc}") from None
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(TOP_KEYS)}"
        )
    base = p.resolve().parent
    data = raw.get("data")
    if not isinstance(data, dict) or "eval" not in data:
        raise SpecError(
            f"{source}: [data] needs eval = <images to evaluate on> (and train = <training images> for [[model]] entries)"
        )
    eval_data = _data_spec(data["eval"], base, "data.eval", source)
    train_data = _data_spec(data.get("train", data["eval"]), base, "data.train", source)
    budget = _budget(raw.get("budget", {}), "[budget]", source)
    ev = raw.get("eval", {})
    if not isinstance(ev, dict) or set(ev) - {"batch_size", "device"}:
        raise SpecError(f"{source}: [eval] takes batch_size and device")
    models = _model_curves(raw.get("model", []), base, budget, source)
    if models and "train" not in data:
        raise SpecError(f"{source}: [data] train = <training images> is required with [[model]] entries")
    codecs, skipped = _codec_sweeps(raw.get("classical", {}), source)
    externals = []
    for i, entry in enumerate(raw.get("external", [])):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise SpecError(f'{source}: [[external]] #{i + 1} needs path = "<CompressAI results .json>"')
        externals.append(read_compressai_json(Path(_resolve_path(entry["path"], base)), entry.get("name")))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"{source}: seed must be an integer")
    spec = SweepSpec(
        p,
        str(raw.get("name", p.stem)),
        str(raw.get("description", "")),
        str(raw.get("anchor", "WebP")),
        seed,
        train_data,
        eval_data,
        budget,
        int(ev.get("batch_size", 64)),
        str(ev.get("device", "cpu")),
        models,
        codecs,
        externals,
        skipped,
        _env(raw.get("env", {}), base, source),
    )
    names = spec.curve_names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(
            f"{source}: curve names must be unique; repeated: {', '.join(dupes)} (give [[model]] entries a name)"
        )
    if not names:
        raise SpecError(f"{source}: nothing to run: add [[model]], [classical] or [[external]] entries")
    if spec.anchor not in names:
        raise SpecError(f"{source}: anchor '{spec.anchor}' is not one of the curves: {', '.join(names)}")
    return spec


# -- data and hashing -----------------------------------------------------------
def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _slice(n: int, ds: DataSpec) -> np.ndarray:
    return np.arange(n)[slice(ds.start, ds.stop)]


def load_data(ds: DataSpec, val_fraction: float = 0.1, seed: int = 0):
    """The ImageSet a DataSpec names (its split, then its slice)."""
    from rdkit_ae.data.sources import load_images

    images = load_images(ds.path, ds.split, val_fraction=val_fraction, seed=seed)
    index = _slice(len(images), ds)
    if len(index) == 0:
        raise SpecError(f"{ds.describe()}: the slice selects no images (the source has {len(images)})")
    return images.subset(index) if len(index) != len(images) else images


def content_hash(images) -> str:
    """Hash of an ImageSet's pixels (arrays) or files' bytes, so caches follow content, not paths."""
    h = hashlib.sha256()
    if images.array is not None:
        h.update(str(images.array.shape).encode())
        h.update(np.ascontiguousarray(images.array).tobytes())
    else:
        for f in images.files:
            h.update(f.name.encode())
            h.update(Path(f).read_bytes())
    return h.hexdigest()


def _training_data(ds: DataSpec, out: Path) -> tuple[str, str]:
    """(``--data`` value for train, content key). A slice is materialised as a .npz under OUT/data."""
    if ds.path == "cifar10" and ds.start is None and ds.stop is None:
        return "cifar10", "cifar10"
    if ds.start is None and ds.stop is None and ds.split == "all":
        from rdkit_ae.data.sources import load_images

        return ds.path, content_hash(load_images(ds.path, "all"))
    images = load_data(ds)
    if images.array is None:
        raise SpecError(
            f"data.train {ds.describe()}: start/stop/split for training need an array source (.npz or cifar10)"
        )
    key = content_hash(images)
    target = out / "data" / f"train-{key[:16]}.npz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.tmp.npz")
        arrays = {"x": images.array} | ({"y": images.labels} if images.labels is not None else {})
        np.savez(tmp, **arrays)
        tmp.replace(target)
    return str(target), key


# -- progress -------------------------------------------------------------------
@dataclass
class Task:
    kind: str  # "train", "eval", "codec", "external"
    label: str
    weight: float  # rough seconds, for the ETA
    cached: bool = False


class Reporter(Protocol):
    def begin(self, tasks: Sequence[Task]) -> None: ...
    def start(self, task: Task) -> None: ...
    def advance(self, task: Task, fraction: float) -> None: ...
    def finish(self, task: Task, cached: bool) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def begin(self, tasks):
        pass

    def start(self, task):
        pass

    def advance(self, task, fraction):
        pass

    def finish(self, task, cached):
        pass

    def note(self, message):
        pass


# -- running ----------------------------------------------------------------------
TrainFn = Callable[..., Any]


def _default_train() -> TrainFn:
    try:
        from rdkit_ae.training.trainer import train
    except ImportError as exc:
        raise RdkitError(f"training is not available (rdkit_ae.train: {exc})") from None
    return train


def run_key(point: Point, train_key: str, seed: int, env: dict[str, str] | None = None) -> str:
    key = {"v": CACHE_VERSION, "recipe": point.recipe.digest(), "data": train_key, "budget": point.budget, "seed": seed}
    if env:
        key["env"] = env  # e.g. which VGG weights a perceptual loss trains with
    return _sha(key)


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _result_to_dict(res) -> dict[str, Any]:
    return {
        "name": res.name,
        "description": res.description,
        "records": res.records,
        "summary": res.summary,
        "meta": res.meta,
    }


def _result_from_dict(d: dict[str, Any]):
    from rdkit_ae.evaluation.evaluator import EvalResult

    return EvalResult(d["name"], d["description"], d["records"], d["summary"], d.get("meta", {}))


@dataclass
class PointResult:
    curve: str
    kind: str  # "learned", "classical", "external"
    label: str
    summary: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    checkpoint: str = ""
    quality: int | None = None
    train_seconds: float | None = None
    steps: int | None = None
    cached: bool = False


@dataclass
class SweepResult:
    out_dir: Path
    curves: dict[str, dict[str, Any]]  # name -> {"kind", "description", "points": [PointResult]}
    bd: dict[str, Any]
    files: dict[str, Path]
    trained: int  # points trained in this call (not taken from the cache)
    notes: list[str]
    failures: list[str]  # points whose training failed (left out of the curves; retried on the next run)


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = True,
    train_fn: TrainFn | None = None,
    reporter: Reporter | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write its reports into ``out`` (default ``bench/<spec name>``).

    ``train_fn`` defaults to :func:`rdkit_ae.train.train` and is called as
    ``train_fn(recipe, data=..., out=run_dir, overrides=[], seed=..., quiet=True,
    evaluate=False, **budget)``; it must return an object with
    ``best_checkpoint`` and/or ``last_checkpoint``. ``resume=False`` retrains
    and re-evaluates every point (``--fresh``).
    """
    from rdkit_ae.evaluation.classic import get_codec
    from rdkit_ae.evaluation.evaluator import evaluate_checkpoint

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    out = (Path(out) if out is not None else Path("bench") / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or SilentReporter()
    notes = list(spec.skipped)

    eval_images = load_data(spec.eval_data, spec.budget.get("val_fraction", 0.1), spec.seed)
    eval_key = content_hash(eval_images)
    n_eval = len(eval_images)
    train_data, train_key = (None, None)
    if spec.points:
        train_data, train_key = _training_data(spec.train_data, out)
        notes += _overlap_notes(spec)
    for n in notes:
        reporter.note(n)

    tasks: list[tuple[Task, Callable[[Task], Any]]] = []
    curves: dict[str, dict[str, Any]] = {}

    # Classical codecs first: they are quick and give the anchor early.
    for sweep in spec.codecs:
        codec = get_codec(sweep.codec)
        curves[codec.label] = {"kind": "classical", "description": "", "points": []}
        for q in sweep.qualities:
            task = Task("codec", f"{codec.label} q={q}", n_eval * 0.004)
            tasks.append(
                (task, _codec_job(out, eval_images, eval_key, sweep, q, curves[codec.label], resume, reporter))
            )
    for ext in spec.externals:
        curves[ext["name"]] = {"kind": "external", "description": ext["description"], "points": _external_points(ext)}
    trained, failures = [0], []
    for model in spec.models:
        curves[model.name] = {"kind": "learned", "description": model.points[0].recipe.description, "points": []}
        for point in model.points:
            key = run_key(point, train_key, spec.seed, effective_env(spec))
            run_dir = out / "runs" / key[:16]
            budget_s = 60.0 * float(point.budget.get("time_budget", 1.0))
            t_train = Task("train", f"train {model.name} [{point.label}]", budget_s)
            t_eval = Task("eval", f"eval {model.name} [{point.label}]", n_eval * 0.01)
            state: dict[str, Any] = {}
            tasks.append(
                (
                    t_train,
                    _train_job(point, run_dir, train_data, spec, train_fn, resume, state, trained, failures, reporter),
                )
            )
            tasks.append(
                (
                    t_eval,
                    _eval_job(
                        point,
                        run_dir,
                        eval_images,
                        eval_key,
                        spec,
                        resume,
                        state,
                        curves[model.name],
                        reporter,
                        evaluate_checkpoint,
                    ),
                )
            )

    reporter.begin([t for t, _ in tasks])
    with _spec_env(spec):
        for task, job in tasks:
            reporter.start(task)
            cached = bool(job(task))
            task.cached = cached
            reporter.finish(task, cached)

    for c in curves.values():
        c["points"].sort(key=lambda p: p.summary["bpp"])
    files = write_reports(out, spec, curves, notes + [f"FAILED: {f}" for f in failures])
    bd = json.loads(files["bd_rate.json"].read_text())
    return SweepResult(out, curves, bd, files, trained[0], notes, failures)


def _overlap_notes(spec: SweepSpec) -> list[str]:
    t, e = spec.train_data, spec.eval_data
    if t.path != e.path or t.split != "all" or e.split != "all":
        return []
    try:
        n = len(load_data(DataSpec(t.path)))
    except RdkitError:
        return []
    shared = set(_slice(n, t).tolist()) & set(_slice(n, e).tolist())
    if shared:
        return [
            f"WARNING: {len(shared)} evaluation image(s) are also training images ({t.describe()} vs {e.describe()})"
        ]
    return []


def _codec_job(out, images, eval_key, sweep, quality, curve, resume, reporter):
    def job(task: Task) -> bool:
        from PIL import __version__ as pillow_version

        from rdkit_ae.evaluation.classic import evaluate_codec, get_codec

        key = _sha(
            {
                "v": CACHE_VERSION,
                "codec": sweep.codec,
                "q": quality,
                "opt": sweep.options,
                "pillow": pillow_version,
                "data": eval_key,
            }
        )
        path = out / "classical" / f"{sweep.codec}-q{quality}-{key[:12]}.json"
        cached = resume and path.is_file() and _read_json(path) is not None
        if cached:
            res = _result_from_dict(_read_json(path))
        else:
            n = len(images)
            res = evaluate_codec(
                images, sweep.codec, quality, options=sweep.options, progress=_fraction(reporter, task, n)
            )
            from rdkit_ae.evaluation.evaluator import write_json

            write_json(path, _result_to_dict(res))
        curve["description"] = res.description
        curve["points"].append(
            PointResult(
                get_codec(sweep.codec).label, "classical", f"q={quality}", res.summary, quality=quality, cached=cached
            )
        )
        return cached

    return job


def _fraction(reporter, task, total):
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        reporter.advance(task, min(1.0, done[0] / max(1, total)))

    return advance


def _external_points(ext: dict[str, Any]) -> list[PointResult]:
    from rdkit_ae.evaluation.evaluator import cr_from_bpp

    r = ext["results"]
    pts = []
    for i, bpp in enumerate(r["bpp"]):
        summary = {
            "bpp": bpp,
            "cr": cr_from_bpp(bpp),
            "psnr": r["psnr-rgb"][i],
            "ssim": r["ssim-rgb"][i] if "ssim-rgb" in r else None,
            "ms_ssim": r["ms-ssim-rgb"][i] if "ms-ssim-rgb" in r else None,
        }
        for ours, theirs in (("encoding_time", "encoding_time"), ("decoding_time", "decoding_time")):
            if theirs in r:
                summary[ours] = r[theirs][i]
        pts.append(PointResult(ext["name"], "external", f"#{i}", summary))
    return pts


def _train_job(point, run_dir: Path, train_data, spec, train_fn, resume, state, trained, failures, reporter):
    def job(task: Task) -> bool:
        done = run_dir / "done.json"
        info = _read_json(done) if resume else None
        if info is not None and Path(info.get("checkpoint", "")).is_file():
            state.update(info)
            return True
        fn = train_fn or _default_train()
        train_dir = run_dir / "train"
        kwargs = dict(
            data=train_data, out=train_dir, overrides=[], seed=spec.seed, quiet=True, evaluate=False, **point.budget
        )
        t0 = time.perf_counter()
        result = None
        finished = _read_json(train_dir / "run.json") if resume else None
        if finished is not None and (train_dir / "best.pt").is_file():
            # The trainer finished (run.json is its last write) but the sweep
            # stopped before recording it: take the run as it is.
            result = SimpleNamespace(
                best_checkpoint=train_dir / "best.pt",
                last_checkpoint=train_dir / "last.pt",
                stopped=finished.get("stopped"),
                epochs=finished.get("epochs"),
                steps=finished.get("steps"),
                recovered=True,
            )
        elif resume and (train_dir / "last.pt").is_file():
            # An interrupted training: continue it from its last checkpoint (the
            # trainer makes that equivalent to an uninterrupted run).
            try:
                result = fn(None, resume=train_dir, **kwargs)
            except RdkitError as exc:
                reporter.note(f"{task.label}: could not resume ({exc}); starting this point over")
        if result is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # unfinished and not resumable, or --fresh: start over
            run_dir.mkdir(parents=True)
            # What the cache key was made of, for a human wondering why a point retrained.
            (run_dir / "point.json").write_text(
                json.dumps(
                    {
                        "curve": point.curve,
                        "label": point.label,
                        "recipe": point.recipe.name,
                        "overrides": point.overrides,
                        "recipe_digest": point.recipe.digest(),
                        "budget": point.budget,
                        "seed": spec.seed,
                        "train_data": train_data,
                        "resolved_recipe": point.recipe.data,
                    },
                    indent=2,
                    default=str,
                )
            )
            try:
                result = fn(point.recipe, **kwargs)
            except RdkitError as exc:
                # One diverging point (e.g. a NaN loss) must not sink a long sweep: record it, go on.
                failures.append(f"{point.curve} [{point.label}]: training failed: {exc}")
                reporter.note(f"FAILED {task.label}: {exc}")
                state["failed"] = True
                return False
        recovered = getattr(result, "recovered", False)
        seconds = None if recovered else time.perf_counter() - t0
        ckpt = getattr(result, "best_checkpoint", None) or getattr(result, "last_checkpoint", None)
        if ckpt is None or not Path(ckpt).is_file():
            raise RdkitError(f"training {point.curve} [{point.label}] produced no checkpoint in {run_dir}")
        info = {
            "checkpoint": str(Path(ckpt).resolve()),
            "train_seconds": seconds,
            "stopped": getattr(result, "stopped", None),
            "epochs": getattr(result, "epochs", None),
            "steps": getattr(result, "steps", None),
            "checkpoint_sha256": _file_sha(Path(ckpt)),
        }
        from rdkit_ae.evaluation.evaluator import write_json

        write_json(done, info)
        state.update(info)
        if recovered:
            return True
        trained[0] += 1
        return False

    return job


def _eval_job(point, run_dir, images, eval_key, spec, resume, state, curve, reporter, evaluate_checkpoint):
    def job(task: Task) -> bool:
        from rdkit_ae.evaluation.evaluator import write_json

        if state.get("failed"):
            return False
        key = _sha(
            {"v": CACHE_VERSION, "ckpt": state["checkpoint_sha256"], "data": eval_key, "batch": spec.eval_batch_size}
        )
        path = run_dir / f"eval-{key[:12]}.json"
        cached = resume and path.is_file() and _read_json(path) is not None
        if cached:
            res = _result_from_dict(_read_json(path))
        else:
            res = evaluate_checkpoint(
                state["checkpoint"],
                images,
                batch_size=spec.eval_batch_size,
                device=spec.device,
                name=point.curve,
                progress=_fraction(reporter, task, len(images)),
            )
            write_json(path, _result_to_dict(res))
        curve["points"].append(
            PointResult(
                point.curve,
                "learned",
                point.label,
                res.summary,
                point.overrides,
                str(run_dir),
                state["checkpoint"],
                train_seconds=state.get("train_seconds"),
                steps=state.get("steps"),
                cached=cached,
            )
        )
        return cached

    return job


# -- reports ------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "curve"


def machine_info() -> dict[str, Any]:
    import torch
    from PIL import __version__ as pillow_version

    try:
        import compressai

        compressai_version = compressai.__version__
    except Exception:  # a broken optional import must not lose a finished sweep's reports
        compressai_version = "?"
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "compressai": compressai_version,
        "pillow": pillow_version,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


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


def write_reports(out: Path, spec: SweepSpec, curves: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Path]:
    from rdkit_ae.evaluation.bdrate import bjontegaard
    from rdkit_ae.evaluation.evaluator import compressai_entry, write_json, write_records_csv
    from rdkit_ae.evaluation.plots import plot_rd

    files: dict[str, Path] = {}
    entries = []
    for name, c in curves.items():
        if not c["points"]:
            continue
        entry = compressai_entry(name, c["description"], [p.summary for p in c["points"]])
        entries.append(entry)
        write_json(out / "curves" / f"{_slug(name)}.json", entry)
    files["results.json"] = out / "results.json"
    write_json(files["results.json"], entries)

    rows = []
    for name, c in curves.items():
        for p in c["points"]:
            s = p.summary
            rows.append(
                {
                    "curve": name,
                    "kind": c["kind"],
                    "point": p.label,
                    "quality": p.quality,
                    **{k: s.get(k) for k in CSV_COLUMNS if k in s},
                    "train_seconds": p.train_seconds,
                    "steps": p.steps,
                    "cached": p.cached,
                    "run_dir": p.run_dir,
                    "checkpoint": p.checkpoint,
                    "overrides": json.dumps(p.overrides) if p.overrides else "",
                }
            )
    rows = [{k: r.get(k) for k in CSV_COLUMNS} for r in rows]
    files["results.csv"] = out / "results.csv"
    write_records_csv(files["results.csv"], rows)

    anchor = curves.get(spec.anchor)
    bd: dict[str, Any] = {"anchor": spec.anchor, "metric": "psnr-rgb", "rate": "bpp", "curves": {}}
    if anchor is None or not anchor["points"]:
        bd["error"] = f"anchor '{spec.anchor}' has no points"
    else:
        ar = [p.summary["bpp"] for p in anchor["points"]]
        aq = [p.summary["psnr"] for p in anchor["points"]]
        for name, c in curves.items():
            if name == spec.anchor or not c["points"]:
                continue
            res = bjontegaard(ar, aq, [p.summary["bpp"] for p in c["points"]], [p.summary["psnr"] for p in c["points"]])
            bd["curves"][name] = {"kind": c["kind"], "points": len(c["points"]), **res.to_dict()}
    files["bd_rate.json"] = out / "bd_rate.json"
    write_json(files["bd_rate.json"], bd)
    files["bd_rate.md"] = out / "bd_rate.md"
    files["bd_rate.md"].write_text(bd_markdown(spec, bd, curves, notes), encoding="utf-8")

    files["rd.png"] = out / "rd.png"
    n_images = next(
        (p.summary.get("n_images") for c in curves.values() for p in c["points"] if p.summary.get("n_images")), "?"
    )
    plot_rd(
        entries,
        files["rd.png"],
        title=f"{spec.name}: {spec.eval_data.describe(short=True)} ({n_images} images)",
        kinds={n: c["kind"] for n, c in curves.items()},
    )

    files["sweep.json"] = out / "sweep.json"
    write_json(
        files["sweep.json"],
        {
            "name": spec.name,
            "description": spec.description,
            "spec": str(spec.path),
            "anchor": spec.anchor,
            "train_data": spec.train_data.describe(),
            "eval_data": spec.eval_data.describe(),
            "budget": spec.budget,
            "seed": spec.seed,
            "env": effective_env(spec),
            "machine": machine_info(),
            "notes": notes,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    return files


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def bd_markdown(spec: SweepSpec, bd: dict[str, Any], curves: dict[str, dict[str, Any]], notes: list[str]) -> str:
    lines = [
        f"# BD-rate: {spec.name}",
        "",
        f"Anchor: **{spec.anchor}**. Rate: bpp of real bitstreams / full files on {spec.eval_data.describe()}; "
        "quality: mean PSNR (RGB, MAX 255). BD-rate < 0: fewer bits than the anchor for the same PSNR; "
        "BD-PSNR > 0: higher PSNR at the same rate. Computed only over the range both curves cover.",
        "",
    ]
    if "error" in bd:
        lines += [f"Not computed: {bd['error']}.", ""]
    lines += [
        "| curve | kind | points | bpp range | PSNR range (dB) | BD-rate | BD-PSNR (dB) | fit | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in bd["curves"].items():
        pts = curves[name]["points"]
        bpps, psnrs = [p.summary["bpp"] for p in pts], [p.summary["psnr"] for p in pts]
        bdpsnr = "n/a" if r["bd_psnr"] is None else f"{r['bd_psnr']:+.3f}"
        lines.append(
            f"| {name} | {r['kind']} | {r['points']} | {min(bpps):.3f}-{max(bpps):.3f} | "
            f"{min(psnrs):.2f}-{max(psnrs):.2f} | {_pct(r['bd_rate'])} | {bdpsnr} | {r['method']} | "
            f"{'; '.join(r['notes']) or '-'} |"
        )
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
