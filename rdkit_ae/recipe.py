"""Recipes: TOML files that name the plugins, losses and training setup of a model.

A recipe is resolved in this order: its file (a zoo name or a path) -> its
``extends`` chain (parent first) -> ``--set`` overrides -> validation, which
fills the ``[train]`` defaults and checks every plugin name and parameter.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import tomllib

from rdkit_ae.errors import PluginError, RecipeError
from rdkit_ae.registry import accepted_params, check_params, get_plugin

PLUGIN_SECTIONS = ("encoder", "quantizer", "decoder")
TOP_LEVEL_KEYS = ("description", "extends", "replace_losses", *PLUGIN_SECTIONS, "loss", "train")

# Schema of [train]: key -> (allowed types, default). Nested tables have their own.
OPTIMIZER_SCHEMA: dict[str, tuple[tuple[type, ...], Any]] = {
    "name": ((str,), "adam"),
    "lr": ((float, int), 1e-3),
    "weight_decay": ((float, int), 0.0),
    "betas": ((list,), [0.9, 0.999]),
    "momentum": ((float, int), 0.9),
}
AUGMENT_SCHEMA: dict[str, tuple[tuple[type, ...], Any]] = {
    "hflip": ((bool,), False),
    "color_jitter": ((float, int), 0.0),
}
TRAIN_SCHEMA: dict[str, tuple[tuple[type, ...], Any]] = {
    "epochs": ((int,), 10),
    "batch_size": ((int,), 128),
    "optimizer": ((dict,), OPTIMIZER_SCHEMA),
    "aux_lr": ((float, int), 1e-3),
    "schedule": ((str,), "cosine"),
    "schedule_interval": ((str,), "epoch"),  # "epoch" or "step": when the schedule advances (checked by rdkit_ae.train)
    "clip_grad": ((float, int), 0.0),
    "augment": ((dict,), AUGMENT_SCHEMA),
    "crop_size": ((int,), 256),
    "seed": ((int,), 0),
    "callbacks": ((list,), []),  # [{ name = "...", param = ... }]: training callbacks (checked by rdkit_ae.training)
    "warmup_steps": ((int,), 0),  # linear learning-rate warm-up over this many steps (needs schedule_interval "step")
    "min_lr_factor": ((float, int), 0.0),  # the cosine ends at this fraction of the learning rate
    "channels_last": ((bool,), False),  # train with NHWC weights (faster convolutions on CPUs)
}
OPTIONAL_TRAIN_KEYS = ("callbacks", "warmup_steps", "min_lr_factor", "channels_last")  # not stored at their defaults
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
SCHEDULE_INTERVALS = ("epoch", "step")
# Numeric [train] keys: path -> (low, high, low allowed, high allowed). A learning
# rate above 10 or a seed outside numpy's 32-bit range fails later with a traceback.
TRAIN_RANGES: dict[tuple[str, ...], tuple[float, float, bool, bool]] = {
    ("epochs",): (1, 1_000_000, True, True),
    ("batch_size",): (1, 1 << 16, True, True),
    ("crop_size",): (1, 1 << 15, True, True),
    ("seed",): (0, 2**32, True, False),
    ("aux_lr",): (0, 10, False, True),
    ("clip_grad",): (0, math.inf, True, False),
    ("warmup_steps",): (0, 1 << 40, True, True),
    ("min_lr_factor",): (0, 1, True, True),
    ("optimizer", "lr"): (0, 10, False, True),
    ("optimizer", "weight_decay"): (0, 10, True, True),
    ("optimizer", "momentum"): (0, 1, True, True),
    ("augment", "color_jitter"): (0, 1, True, True),
}


def zoo_names() -> list[str]:
    """Names of the recipes shipped in ``rdkit_ae.zoo``."""
    root = resources.files("rdkit_ae.zoo")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


@dataclass
class Recipe:
    """A resolved, validated recipe. ``data`` is plain TOML-compatible data."""

    name: str
    source: str
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def description(self) -> str:
        return self.data.get("description", "")

    @property
    def losses(self) -> list[dict[str, Any]]:
        return self.data["loss"]

    @property
    def train(self) -> dict[str, Any]:
        return self.data["train"]

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.data)

    def digest(self) -> str:
        """A stable hash of the resolved content (not of the file it came from)."""
        canon = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    @classmethod
    def from_toml(cls, text: str, name: str = "recipe", source: str = "<string>") -> "Recipe":
        """Rebuild a recipe that was stored resolved (e.g. inside a checkpoint)."""
        raw = _parse(text, source)
        raw.pop("extends", None)
        return cls(name, source, validate(raw, source))


# -- loading --------------------------------------------------------------
def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{source}: invalid TOML: {exc}") from None


def _locate(name_or_path: str | Path, relative_to: Path | None = None) -> tuple[str, str, str]:
    """Return (name, source, text) for a zoo name or a file path."""
    s = str(name_or_path)
    candidates = [Path(s)]
    if relative_to is not None and not Path(s).is_absolute():
        candidates.insert(0, relative_to / s)
    for p in candidates:
        if p.is_file():
            try:
                return p.stem, str(p), p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RecipeError(f"{p}: cannot read recipe: {exc}") from None
    names = zoo_names()
    if s in names:
        res = resources.files("rdkit_ae.zoo").joinpath(f"{s}.toml")
        return s, f"zoo:{s}", res.read_text(encoding="utf-8")
    if s.endswith(".toml") or "/" in s or "\\" in s:
        raise RecipeError(f"recipe file not found: {s}")
    close = difflib.get_close_matches(s, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise RecipeError(f"unknown recipe '{s}'; zoo recipes: {', '.join(names)}{hint} (or give a path to a .toml file)")


def _merge(parent: dict[str, Any], child: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(parent)
    replace_losses = child.get("replace_losses", False)
    for key, value in child.items():
        if key in ("extends", "replace_losses"):
            continue
        if key == "loss":
            out["loss"] = copy.deepcopy(value) if replace_losses else out.get("loss", []) + copy.deepcopy(value)
        elif key in PLUGIN_SECTIONS and isinstance(value, dict) and isinstance(out.get(key), dict):
            # Choosing another plugin drops the parent's parameters for the old one.
            if "name" in value and value["name"] != out[key].get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = _deep_update(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _resolve(name_or_path: str | Path, relative_to: Path | None, seen: tuple[str, ...]) -> tuple[str, str, dict]:
    name, source, text = _locate(name_or_path, relative_to)
    if source in seen:
        raise RecipeError(f"{source}: 'extends' cycle: {' -> '.join(seen + (source,))}")
    raw = _parse(text, source)
    parent = raw.get("extends")
    if parent is None:
        return name, source, raw
    if not isinstance(parent, str):
        raise RecipeError(f"{source}: 'extends' must be a recipe name or path (a string)")
    here = Path(source).parent if not source.startswith("zoo:") else None
    _, _, parent_raw = _resolve(parent, here, seen + (source,))
    return name, source, _merge(parent_raw, raw, source)


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=1e-3"`` -> ``("a.b", 0.001)``; values are TOML, bare words are strings."""
    if "=" not in item:
        raise RecipeError(f"override '{item}' must look like dotted.key=value")
    key, _, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not key:
        raise RecipeError(f"override '{item}' has an empty key")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # e.g. --set encoder.norm=group
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        if parts[0] == "loss":
            if len(parts) < 3:
                raise RecipeError(f"override '{key}': use loss.NAME.param or loss.INDEX.param (e.g. loss.rate.weight)")
            node, path = _loss_entry(out.get("loss", []), parts[1], key, source), parts[2:]
        else:
            node, path = out, parts
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: override '{key}': '{part}' is not a table")
            node = child
        node[path[-1]] = value
    return out


def _loss_entry(losses: list[dict[str, Any]], selector: str, key: str, source: str) -> dict[str, Any]:
    if selector.isdigit():
        idx = int(selector)
        if idx >= len(losses):
            raise RecipeError(f"{source}: override '{key}': there are only {len(losses)} [[loss]] entries")
        return losses[idx]
    matches = [entry for entry in losses if entry.get("name") == selector]
    if len(matches) == 1:
        return matches[0]
    names = [str(entry.get("name")) for entry in losses]
    if not matches:
        raise RecipeError(f"{source}: override '{key}': no [[loss]] named '{selector}'; losses: {', '.join(names)}")
    raise RecipeError(f"{source}: override '{key}': several losses named '{selector}'; use its index (loss.N.param)")


def load_recipe(
    name_or_path: str | Path | Recipe,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> Recipe:
    """Load a zoo recipe by name or a TOML file by path, apply ``extends`` and overrides, validate.

    ``overrides`` is a list of ``"dotted.key=value"`` strings or a mapping of
    dotted keys to values; ``loss.NAME.param`` addresses a ``[[loss]]`` entry.
    """
    if isinstance(name_or_path, Recipe):
        name, source, raw = name_or_path.name, name_or_path.source, copy.deepcopy(name_or_path.data)
    else:
        name, source, raw = _resolve(name_or_path, None, ())
    raw.pop("extends", None)
    raw = apply_overrides(raw, overrides, source)
    return Recipe(name, source, validate(raw, source))


# -- validation -------------------------------------------------------------
def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(
        {"str": "string", "int": "integer", "float": "number", "dict": "table", "list": "array", "bool": "boolean"}[
            t.__name__
        ]
        for t in types
    )


def _check_table(
    table: Any, schema: dict[str, tuple[tuple[type, ...], Any]], where: str, source: str
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: [{where}] must be a table")
    out: dict[str, Any] = {}
    for key in table:
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{source}: [{where}] unknown key '{key}'{hint}; allowed: {', '.join(schema)}")
    for key, (types, default) in schema.items():
        if dict in types and isinstance(default, dict):
            out[key] = _check_table(table.get(key, {}), default, f"{where}.{key}", source)
            continue
        value = table.get(key, copy.deepcopy(default))
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise RecipeError(f"{source}: [{where}] '{key}' must be {_type_name(types)}, got {value!r}")
        out[key] = float(value) if float in types and isinstance(value, int) and not isinstance(value, bool) else value
    return out


def _check_choice(value: str, allowed: tuple[str, ...], what: str, source: str) -> None:
    if value not in allowed:
        raise RecipeError(f"{source}: {what} '{value}' is not one of: {', '.join(allowed)}")


def validate(raw: dict[str, Any], source: str = "<recipe>") -> dict[str, Any]:
    """Check a merged recipe and return it with defaults filled in."""
    _check_top_level(raw, source)
    data: dict[str, Any] = {"description": raw.get("description", "")}
    if not isinstance(data["description"], str):
        raise RecipeError(f"{source}: 'description' must be a string")
    for section in PLUGIN_SECTIONS:
        data[section] = _check_plugin(raw, section, source)
    data["loss"] = _check_losses(raw.get("loss", []), source)
    data["train"] = _check_train(raw.get("train", {}), source)
    return data


def _check_top_level(raw: dict[str, Any], source: str) -> None:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{source}: unknown top-level key '{key}'{hint}; allowed: {', '.join(TOP_LEVEL_KEYS)}")


def _check_plugin(raw: dict[str, Any], section: str, source: str) -> dict[str, Any]:
    table = raw.get(section)
    if table is None and section == "decoder" and isinstance(raw.get("encoder"), dict):
        table = {"name": raw["encoder"].get("name")}  # a decoder mirrors its encoder by default
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        raise RecipeError(f"{source}: [{section}] must be a table with a string 'name'")
    params = {k: v for k, v in table.items() if k != "name"}
    try:
        info = get_plugin(section, table["name"])
        check_params(info, {**params, **_injected(section, info)})
    except PluginError as exc:
        raise RecipeError(f"{source}: [{section}] {exc}") from None
    return dict(table)


def _check_losses(losses: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(losses, list) or not losses:
        raise RecipeError(f"{source}: a recipe needs at least one [[loss]] entry")
    out = []
    for i, entry in enumerate(losses):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RecipeError(f"{source}: [[loss]] #{i} must be a table with a string 'name'")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RecipeError(f"{source}: [[loss]] '{entry['name']}' weight must be a finite number, got {weight!r}")
        params = {k: v for k, v in entry.items() if k not in ("name", "weight")}
        try:
            check_params(get_plugin("loss", entry["name"]), params)
        except PluginError as exc:
            raise RecipeError(f"{source}: [[loss]] #{i} {exc}") from None
        out.append({**entry, "weight": float(weight)})
    return out


def _check_train(table: Any, source: str) -> dict[str, Any]:
    train = _check_table(table, TRAIN_SCHEMA, "train", source)
    _check_choice(train["optimizer"]["name"], OPTIMIZERS, "[train.optimizer] name", source)
    _check_choice(train["schedule"], SCHEDULES, "[train] schedule", source)
    _check_choice(train["schedule_interval"], SCHEDULE_INTERVALS, "[train] schedule_interval", source)
    for path, bounds in TRAIN_RANGES.items():
        node = train
        for part in path[:-1]:
            node = node[part]
        where = ".".join(("train", *path[:-1]))
        _check_range(node[path[-1]], bounds, f"{source}: [{where}] '{path[-1]}'")
    betas = train["optimizer"]["betas"]
    if len(betas) != 2 or not all(_in_range(b, (0, 1, True, False)) for b in betas):
        raise RecipeError(f"{source}: [train.optimizer] 'betas' must be two numbers in [0, 1), got {betas!r}")
    for key in OPTIONAL_TRAIN_KEYS:
        if train[key] == TRAIN_SCHEMA[key][1]:
            del train[key]
    return train


def _in_range(value: Any, bounds: tuple[float, float, bool, bool]) -> bool:
    low, high, low_ok, high_ok = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value > low or (low_ok and value == low)) and (value < high or (high_ok and value == high))


def _check_range(value: Any, bounds: tuple[float, float, bool, bool], what: str) -> None:
    """One line naming the allowed range; NaN and infinities never pass (they slip through ``x > 0``)."""
    if _in_range(value, bounds):
        return
    low, high, low_ok, high_ok = bounds
    lower = f"at least {_num(low)}" if low_ok else f"greater than {_num(low)}"
    upper = "" if math.isinf(high) else f" and {'at most' if high_ok else 'less than'} {_num(high)}"
    raise RecipeError(f"{what} must be {lower}{upper}; got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _injected(section: str, info: Any) -> dict[str, Any]:
    """Parameters the model builder supplies itself (so a recipe may omit them)."""
    accepted = accepted_params(info.factory)
    if section == "quantizer" and (accepted is None or "channels" in accepted):
        return {"channels": 0}
    return {}
