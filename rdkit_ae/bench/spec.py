"""The sweep spec: what ``rdkit bench`` runs, read from TOML and validated whole.

:func:`load_spec` checks every table (data, budget, eval, models, codecs,
externals, env) before any work starts, so a typo fails in a second with a
one-line ``SpecError`` naming the file and key, not an hour into a sweep.
The per-table parsers are in :mod:`rdkit_ae.bench.spec_tables`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import tomllib

from rdkit_ae.bench.spec_metrics import spec_metrics
from rdkit_ae.bench.spec_parallel import parallel_table
from rdkit_ae.bench.spec_tables import (
    CodecSweep,
    DataSpec,
    ModelCurve,
    Point,
    SpecError,
    bd_window_value,
    budget_table,
    codec_sweeps,
    data_spec,
    env_table,
    eval_pad,
    eval_table,
    external_curves,
    model_curves,
    string_value,
)
from rdkit_ae.evaluation.classic import get_codec

TOP_KEYS = (
    "name", "description", "anchor", "seed", "data", "budget", "eval", "env", "model", "classical", "external",
    "parallel", "bd_window", "metrics", "bd_metric",
)  # fmt: skip

__all__ = [
    "CodecSweep",
    "DataSpec",
    "ModelCurve",
    "Point",
    "SpecError",
    "SweepSpec",
    "effective_env",
    "load_spec",
    "spec_env",
]


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
    env_paths: tuple[str, ...] = ()  # the [env] names given as { path = ... }
    parallel: dict[str, Any] = field(default_factory=dict)  # [parallel]: defaults for --jobs, --executor, ...
    bd_window: tuple[float, float] | None = None  # BD figures over this rate window (bpp); None: whole curves
    bd_metric: str = "psnr"  # the quality the BD figures use (rdkit_ae.evaluation.perceptual names)

    @property
    def points(self) -> list[Point]:
        return [p for m in self.models for p in m.points]

    @property
    def base(self) -> Path:
        """The spec's folder: relative paths in the spec (and in the reports) are relative to it."""
        return self.path.resolve().parent

    def curve_names(self) -> list[str]:
        return (
            [m.name for m in self.models]
            + [get_codec(c.codec).label for c in self.codecs]
            + [e["name"] for e in self.externals]
        )


def effective_env(spec: SweepSpec) -> dict[str, str]:
    """The [env] values a sweep's trainings see: the user's environment wins over the spec."""
    return {k: os.environ.get(k, v) for k, v in spec.env.items()}


@contextlib.contextmanager
def spec_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in os.environ for the duration, then restore what was there."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_toml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise SpecError(f"sweep spec not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: invalid TOML: {exc}") from None
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise SpecError(f"{p}: unknown top-level key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(TOP_KEYS)}")
    return raw


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; relative paths are relative to the spec's folder."""
    p = Path(path)
    raw = _read_toml(p)
    source = str(p)
    base = p.resolve().parent
    data = raw.get("data")
    if not isinstance(data, dict) or "eval" not in data:
        raise SpecError(
            f"{source}: [data] needs eval = <images to evaluate on> "
            "(and train = <training images> for [[model]] entries)"
        )
    unknown = set(data) - {"train", "eval"}
    if unknown:
        raise SpecError(f"{source}: [data]: unknown key(s) {', '.join(sorted(unknown))}; allowed: train, eval")
    eval_data = data_spec(data["eval"], base, "data.eval", source)
    train_data = data_spec(data.get("train", data["eval"]), base, "data.train", source)
    budget = budget_table(raw.get("budget", {}), "[budget]", source)
    batch_size, device = eval_table(raw.get("eval", {}), source)
    eval_data.pad = eval_pad(raw.get("eval", {}), source)  # travels with the images to the evaluation jobs
    eval_data.metrics, bd_metric = spec_metrics(raw, source)  # likewise
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"{source}: seed must be an integer")
    env, env_paths = env_table(raw.get("env", {}), base, source)
    models = model_curves(raw.get("model", []), base, budget, source)
    if models and "train" not in data:
        raise SpecError(f"{source}: [data] train = <training images> is required with [[model]] entries")
    codecs, skipped = codec_sweeps(raw.get("classical", {}), source)
    spec = SweepSpec(
        p,
        string_value(raw, "name", p.stem, source),
        string_value(raw, "description", "", source, empty=True),
        string_value(raw, "anchor", "WebP", source),
        seed,
        train_data,
        eval_data,
        budget,
        batch_size,
        device,
        models,
        codecs,
        external_curves(raw.get("external", []), base, source),
        skipped,
        env,
        env_paths,
        parallel_table(raw.get("parallel", {}), source),
        bd_window_value(raw.get("bd_window"), source),
        bd_metric,
    )
    _check_curves(spec, source)
    return spec


def _check_curves(spec: SweepSpec, source: str) -> None:
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
