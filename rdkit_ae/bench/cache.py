"""The sweep's cache: keys (hashes of what a result depends on) and cached results on disk.

A key is the SHA-256 of the canonical JSON of a small dict; the dicts are
those of the first version of the bench, so caches made then stay valid.
Bump ``CACHE_VERSION`` when a cached file changes meaning.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rdkit_ae.evaluation.results import EvalResult
from rdkit_ae.files import write_json

CACHE_VERSION = 1


def sha(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces; non-JSON values as str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or unreadable (an unfinished write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def load_result(path: Path) -> EvalResult | None:
    """A cached EvalResult, or None when there is none (or it is unreadable)."""
    d = read_json(path)
    if not isinstance(d, dict) or not {"name", "description", "records", "summary"} <= set(d):
        return None
    return EvalResult(d["name"], d["description"], d["records"], d["summary"], d.get("meta", {}))


def store_result(path: Path, res: EvalResult) -> None:
    fields = ("name", "description", "records", "summary", "meta")
    write_json(path, {k: getattr(res, k) for k in fields})
