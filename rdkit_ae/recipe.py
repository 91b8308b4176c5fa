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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import tomllib

from rdkit_ae.errors import RecipeError
from rdkit_ae.recipe_checks import PLUGIN_SECTIONS, validate


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


__all__ = ["Recipe", "apply_overrides", "load_recipe", "parse_override", "validate", "zoo_names"]
