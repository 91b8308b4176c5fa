"""The entropy tables of an export (``tables.npz``): written from a model, read back with every check.

Arrays (``y_*``: the Gaussian conditional of ``y``; ``z_*``: the factorized
bottleneck of ``z``; ``gain_*``: a variable-rate model's gains):

- ``y_cdf`` (S, L) int32, ``y_cdf_length`` (S,) int32, ``y_offset`` (S,) int32,
  ``y_scale_table`` (S,) float32, ``y_scale_bound`` (1,) float32;
- ``z_cdf`` (N, L') int32, ``z_cdf_length`` (N,) int32, ``z_offset`` (N,) int32,
  ``z_medians`` (N,) float32;
- ``gain_log_inverse`` (K, M) float32 and ``gain_inverse_grid`` (4(K-1)+1, M)
  float32: the inverse gains torch computes at every quarter rate position.

The file is untrusted when read: a zip of plain ``.npy`` members (no pickles),
uncompressed sizes bounded before anything is loaded, each array's dtype and
shape compared with the manifest and with each other, and the CDF tables
checked as :mod:`rdkit_ae.guards` checks a checkpoint's (the C++ coder indexes
them without bounds checks).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rdkit_ae.interop.onnx.manifest import TABLES, ExportDirError, Manifest

PRECISION = 16  # CompressAI's rANS probability bits
MAX_TABLE_BYTES = 256 << 20
RATE_GRID = 4  # quarter rate positions, as .rdk files store them in one byte


def model_tables(codec, gain=None) -> dict[str, np.ndarray]:
    """The arrays of ``tables.npz`` for a hyperprior-family quantizer ``codec`` (and its ``gain`` wrapper)."""
    import torch

    gc, eb = codec.gaussian, codec.hyper.entropy_bottleneck

    def ints(t) -> np.ndarray:
        return t.detach().cpu().to(torch.int32).numpy()

    out = {
        "y_cdf": ints(gc._quantized_cdf),
        "y_cdf_length": ints(gc._cdf_length.reshape(-1)),
        "y_offset": ints(gc._offset.reshape(-1)),
        "y_scale_table": gc.scale_table.detach().cpu().float().numpy(),
        "y_scale_bound": gc.lower_bound_scale.bound.detach().cpu().float().reshape(1).numpy(),
        "z_cdf": ints(eb._quantized_cdf),
        "z_cdf_length": ints(eb._cdf_length.reshape(-1)),
        "z_offset": ints(eb._offset.reshape(-1)),
        "z_medians": eb._get_medians().detach().cpu().float().reshape(-1).numpy(),
    }
    if gain is not None:
        positions = torch.arange(RATE_GRID * (len(gain.lambdas) - 1) + 1, dtype=torch.float32) / RATE_GRID
        with torch.no_grad():
            # One position at a time, as the decoder's gain.decompress computes them (a (1,) tensor).
            grid = [gain.gains(t.reshape(1))[1].reshape(-1) for t in positions]
        out["gain_log_inverse"] = gain.log_inverse_gain.detach().cpu().float().numpy()
        out["gain_inverse_grid"] = torch.stack(grid).cpu().float().numpy()
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def specs(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (str(v.dtype), tuple(int(s) for s in v.shape)) for k, v in arrays.items()}


def save_tables(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(folder / TABLES, **arrays)  # uncompressed: member sizes are what loading allocates


# -- reading (untrusted) --------------------------------------------------------------------
def _expected(m: Manifest) -> dict[str, tuple[str, tuple[int, ...]]]:
    """dtype and shape of every array, from the manifest's own (rows/columns) and the model's sizes."""
    got = m.tables
    rows_y = got.get("y_cdf", ("", (0, 0)))[1][0]
    cols_y, cols_z = got.get("y_cdf", ("", (0, 0)))[1][-1], got.get("z_cdf", ("", (0, 0)))[1][-1]
    N, M = m.hyper_channels, m.channels
    want = {
        "y_cdf": ("int32", (rows_y, cols_y)),
        "y_cdf_length": ("int32", (rows_y,)),
        "y_offset": ("int32", (rows_y,)),
        "y_scale_table": ("float32", (rows_y,)),
        "y_scale_bound": ("float32", (1,)),
        "z_cdf": ("int32", (N, cols_z)),
        "z_cdf_length": ("int32", (N,)),
        "z_offset": ("int32", (N,)),
        "z_medians": ("float32", (N,)),
    }
    if m.lambdas is not None:
        K = len(m.lambdas)
        want["gain_log_inverse"] = ("float32", (K, M))
        want["gain_inverse_grid"] = ("float32", (RATE_GRID * (K - 1) + 1, M))
    return want


def _check_cdfs(name: str, cdf: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, where: str) -> None:
    rows, cols = cdf.shape
    lengths64, cdf64 = lengths.astype(np.int64), cdf.astype(np.int64)
    if rows < 1 or ((lengths64 < 3) | (lengths64 > cols)).any():
        raise ExportDirError(f"{where}: {name} CDF lengths outside 3..{cols}")
    if (np.abs(offsets.astype(np.int64)) > (1 << 24)).any():
        raise ExportDirError(f"{where}: {name} CDF offsets out of range")
    inside = np.arange(cols)[None, :] < lengths64[:, None]
    last = np.take_along_axis(cdf64, (lengths64 - 1)[:, None], axis=1)[:, 0]
    steps = np.diff(cdf64, axis=1)
    if (cdf64[:, 0] != 0).any() or (last != 1 << PRECISION).any() or ((steps <= 0) & inside[:, 1:]).any():
        raise ExportDirError(f"{where}: {name} CDF tables are not valid (must rise strictly from 0 to 2**{PRECISION})")


def _check_values(t: dict[str, np.ndarray], where: str) -> None:
    _check_cdfs("y", t["y_cdf"], t["y_cdf_length"], t["y_offset"], where)
    _check_cdfs("z", t["z_cdf"], t["z_cdf_length"], t["z_offset"], where)
    table, bound = t["y_scale_table"], t["y_scale_bound"]
    if not (np.isfinite(table).all() and (table > 0).all() and (np.diff(table) > 0).all() and np.isfinite(bound).all()):
        raise ExportDirError(f"{where}: the scale table must be finite, positive and increasing")
    floats = [v for k, v in t.items() if v.dtype == np.float32]
    if not all(np.isfinite(v).all() for v in floats) or (np.abs(t["z_medians"]) > (1 << 24)).any():
        raise ExportDirError(f"{where}: tables hold NaN, infinite or huge values")
    if "gain_inverse_grid" in t and not (
        (t["gain_inverse_grid"] > 0).all() and (np.abs(t["gain_log_inverse"]) < 80).all()
    ):
        raise ExportDirError(f"{where}: gains out of range")


def load_tables(folder: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """The checked arrays of ``folder/tables.npz`` (no pickles; sizes bounded before loading)."""
    path = folder / TABLES
    where = f"ONNX export {folder}: {TABLES}"
    want = _expected(manifest)
    if manifest.tables != want:
        raise ExportDirError(f"{where}: the manifest's tables do not match the model's sizes")
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportDirError(f"{where}: cannot read it ({str(exc)[:120]})") from None
    if set(infos) != {f"{k}.npy" for k in want}:
        raise ExportDirError(f"{where}: holds other arrays than the manifest lists")
    if sum(i.file_size for i in infos.values()) > MAX_TABLE_BYTES:
        raise ExportDirError(f"{where}: larger than {MAX_TABLE_BYTES:,} bytes")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in want}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ExportDirError(f"{where}: cannot load it ({str(exc)[:120]})") from None
    for k, (dtype, shape) in want.items():
        if str(arrays[k].dtype) != dtype or arrays[k].shape != shape:
            raise ExportDirError(f"{where}: '{k}' is {arrays[k].dtype} {arrays[k].shape}, expected {dtype} {shape}")
    _check_values(arrays, where)
    return arrays


__all__ = ["PRECISION", "RATE_GRID", "load_tables", "model_tables", "save_tables", "specs"]
