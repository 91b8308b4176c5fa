"""Validation of resolved recipes: the schema of each table and the checks that give one-line errors.

:func:`validate` fills the ``[train]`` defaults, checks every plugin name and
parameter against the registry, and bounds every number a recipe can set, so
a bad or crafted recipe is refused before anything is built.
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Any

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
