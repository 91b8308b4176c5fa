"""``manifest.json`` of an ONNX export: what the graphs and tables are, and how a decoder puts them together.

The manifest is data a decoder reads from an export folder, so it is
untrusted: :func:`read_manifest` bounds its size, checks every field it uses
(types, ranges, plain file names inside the folder) and refuses anything else
in one line. Fields only for people and other runtimes (the rANS parameters,
the latent layout, the grids) are written but not needed here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdkit_ae.errors import RdkitError

FORMAT = "rdkit-ae-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES = "tables.npz"
DECODES = (3, 4)  # .rdk versions with the portable entropy-parameter path (1/2 used float h_s)
FAMILIES = ("hyperprior", "mean-scale-hyperprior", "checkerboard")
MAX_MANIFEST_BYTES = 1 << 20
MAX_CHANNELS = 1 << 14
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.onnx$")
DTYPES = ("float32", "float64")

# CompressAI's rANS coder (compressai.ans, cpp_exts/rans/rans_interface.cpp over ryg's rans64.h): for other runtimes.
RANS = {
    "coder": "CompressAI rANS (rans64): 64-bit state, 32-bit little-endian words, RANS64_L = 2**31",
    "precision": 16,
    "bypass_precision": 4,
    "max_bypass_value": 15,
    "symbol_order": "C order over the decoded array (channel, row, column); the encoder codes them backwards",
    "escape": "symbol index cdf_length - 2 is the escape: n nibbles (15 continues), then raw = nibbles little end "
    "first; value = raw >> 1, negative (-value - 1) when raw is odd, else value + cdf_length - 2",
}


class ExportDirError(RdkitError):
    """An ONNX export folder that is missing, incomplete or malformed."""


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph: its file, when it runs, and its single input and output (NCHW, dynamic H and W)."""

    file: str
    roles: tuple[str, ...]
    input: str
    output: str
    dtype: str
    in_channels: int
    out_channels: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "roles": list(self.roles),
            "inputs": [{"name": self.input, "dtype": self.dtype, "shape": [1, self.in_channels, "h", "w"]}],
            "outputs": [{"name": self.output, "dtype": self.dtype, "shape": [1, self.out_channels, "h'", "w'"]}],
        }


@dataclass(frozen=True)
class Manifest:
    """What a decoder needs from ``manifest.json`` (checked)."""

    model_id: bytes
    recipe: str
    family: str
    channels: int  # M: latent channels of y
    hyper_channels: int  # N: channels of z
    encoder_stride: int
    hyper_stride: int
    graphs: dict[str, GraphSpec]
    tables: dict[str, tuple[str, tuple[int, ...]]]
    lambdas: tuple[float, ...] | None = None
    default_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def stride(self) -> int:
        return self.encoder_stride * self.hyper_stride

    @property
    def streams(self) -> int:
        return 3 if self.family == "checkerboard" else 2

    @property
    def variable_rate(self) -> bool:
        return self.lambdas is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id.hex(),
            "recipe": self.recipe,
            "family": self.family,
            "decodes_rdk_versions": list(DECODES),
            "latent": {
                "channels": self.channels,
                "hyper_channels": self.hyper_channels,
                "encoder_stride": self.encoder_stride,
                "hyper_stride": self.hyper_stride,
                "streams": ["y anchors", "y non-anchors", "z"] if self.family == "checkerboard" else ["y", "z"],
            },
            "variable_rate": None
            if self.lambdas is None
            else {"lambdas": list(self.lambdas), "default_rate": self.default_rate},
            "graphs": {name: g.to_json() for name, g in self.graphs.items()},
            "tables": {
                "file": TABLES,
                "arrays": {k: {"dtype": d, "shape": list(s)} for k, (d, s) in self.tables.items()},
            },
            "rans": RANS,
        }
        data.update(self.extra)
        return data


def write_manifest(folder: Path, manifest: Manifest) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")


# -- reading (untrusted) ------------------------------------------------------------------------
def _get(data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ExportDirError(f"{where}: '{key}' is missing")
    value = data[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ExportDirError(f"{where}: '{key}' has the wrong type")
    return value


def _int(data: Any, key: str, where: str, lo: int, hi: int) -> int:
    value = _get(data, key, int, where)
    if not lo <= value <= hi:
        raise ExportDirError(f"{where}: '{key}' = {value} is outside {lo}..{hi}")
    return value


def _graph(name: str, data: Any, where: str) -> GraphSpec:
    where = f"{where}: graph '{name}'"
    file = _get(data, "file", str, where)
    if not _FILE.match(file):
        raise ExportDirError(f"{where}: file name {file[:80]!r} is not a plain .onnx name in the export folder")
    roles = tuple(_get(data, "roles", list, where))
    (inp,) = _get(data, "inputs", list, where)[:1] or [None]
    (out,) = _get(data, "outputs", list, where)[:1] or [None]
    dtype = _get(inp, "dtype", str, where)
    if dtype not in DTYPES or _get(out, "dtype", str, where) != dtype:
        raise ExportDirError(f"{where}: dtypes must be one of {DTYPES}, the same in and out")
    shapes = [_get(inp, "shape", list, where), _get(out, "shape", list, where)]
    channels = [s[1] if len(s) == 4 and isinstance(s[1], int) and not isinstance(s[1], bool) else 0 for s in shapes]
    if not all(1 <= c <= MAX_CHANNELS for c in channels):
        raise ExportDirError(f"{where}: shapes must be [1, channels, h, w] with 1..{MAX_CHANNELS} channels")
    names = _get(inp, "name", str, where), _get(out, "name", str, where)
    return GraphSpec(file, tuple(str(r) for r in roles), names[0], names[1], dtype, channels[0], channels[1])


def _tables(data: Any, where: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    arrays = _get(_get(data, "tables", dict, where), "arrays", dict, where)
    out = {}
    for key, spec in arrays.items():
        shape = _get(spec, "shape", list, f"{where}: table '{key}'")
        if len(shape) > 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 1 << 20 for s in shape):
            raise ExportDirError(f"{where}: table '{key}' has a malformed shape")
        out[str(key)] = (_get(spec, "dtype", str, f"{where}: table '{key}'"), tuple(shape))
    return out


def _rates(data: Any, where: str) -> tuple[tuple[float, ...] | None, float | None]:
    vr = data.get("variable_rate")
    if vr is None:
        return None, None
    lambdas = _get(vr, "lambdas", list, where)
    ok = 2 <= len(lambdas) <= 64 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lambdas)
    if not ok or not all(math.isfinite(v) and v > 0 for v in lambdas):
        raise ExportDirError(f"{where}: 'lambdas' must be 2..64 positive numbers")
    rate = _get(vr, "default_rate", (int, float), where)
    if not 0 <= rate <= len(lambdas) - 1:
        raise ExportDirError(f"{where}: 'default_rate' is outside the trained range")
    return tuple(float(v) for v in lambdas), float(rate)


def read_manifest(folder: Path) -> Manifest:
    """The checked manifest of the export in ``folder``; :class:`ExportDirError` in one line on any defect."""
    where = f"ONNX export {folder}"
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ExportDirError(f"{where}: not a folder (make one with `rdkit export onnx CHECKPOINT -o DIR`)")
    if not path.is_file():
        raise ExportDirError(f"{where}: no {MANIFEST} (make the folder with `rdkit export onnx CHECKPOINT -o DIR`)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ExportDirError(f"{where}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes")
    where = f"{where}: {MANIFEST}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportDirError(f"{where}: not valid JSON ({str(exc)[:120]})") from None
    if _get(data, "format", str, where) != FORMAT:
        raise ExportDirError(f"{where}: not an rdkit-ae ONNX export")
    if _get(data, "format_version", int, where) != FORMAT_VERSION:
        raise ExportDirError(f"{where}: format version {data['format_version']} (this rdkit-ae reads {FORMAT_VERSION})")
    mid = _get(data, "model_id", str, where)
    if not re.fullmatch(r"[0-9a-f]{8}", mid):
        raise ExportDirError(f"{where}: 'model_id' must be 8 hex digits")
    family = _get(data, "family", str, where)
    if family not in FAMILIES:
        raise ExportDirError(f"{where}: family {family[:40]!r} is not one of {', '.join(FAMILIES)}")
    latent = _get(data, "latent", dict, where)
    graphs = {str(k): _graph(str(k), v, where) for k, v in _get(data, "graphs", dict, where).items()}
    lambdas, rate = _rates(data, where)
    return Manifest(
        bytes.fromhex(mid),
        _get(data, "recipe", str, where)[:200],
        family,
        _int(latent, "channels", where, 1, MAX_CHANNELS),
        _int(latent, "hyper_channels", where, 1, MAX_CHANNELS),
        _int(latent, "encoder_stride", where, 1, 1024),
        _int(latent, "hyper_stride", where, 1, 1024),
        graphs,
        _tables(data, where),
        lambdas,
        rate,
    )


__all__ = [
    "DECODES",
    "FAMILIES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "RANS",
    "TABLES",
    "ExportDirError",
    "GraphSpec",
    "Manifest",
    "read_manifest",
    "write_manifest",
]
