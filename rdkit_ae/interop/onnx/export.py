"""``rdkit export onnx``: a checkpoint as ONNX graphs, entropy tables and a manifest, for decoders outside torch.

Supported: the hyperprior family with the portable (integer) entropy-parameter
path, alone or under ``gain`` (variable rate): quantizers ``hyperprior``,
``mean-scale-hyperprior`` and ``checkerboard``, with any encoder/decoder that
torch's ONNX exporter handles (the zoo's ``block`` and CompressAI transforms).
The folder is written next to its destination and renamed into place only
once every graph passed the checker and agreed with torch.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdkit_ae.errors import RdkitError
from rdkit_ae.interop.onnx import graphs as G
from rdkit_ae.interop.onnx import tables as T
from rdkit_ae.interop.onnx.manifest import MANIFEST, GraphSpec, Manifest, write_manifest
from rdkit_ae.plugin.exact import to_grid

SUPPORTED = "hyperprior, mean-scale-hyperprior and checkerboard quantizers, alone or under 'gain'"


class UnsupportedModel(RdkitError):
    """A model the ONNX export cannot write."""


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    manifest: Manifest
    nbytes: int


def _family(model) -> tuple[str, Any, Any]:
    """(family, hyperprior-family codec, gain quantizer or None) of ``model``; refuse anything else."""
    from rdkit_ae.plugins.checkerboard import CheckerboardQuantizer
    from rdkit_ae.plugins.entropy_coded import HyperpriorQuantizer
    from rdkit_ae.plugins.meanscale import MeanScaleHyperpriorQuantizer
    from rdkit_ae.plugins.variable_rate import GainQuantizer

    q: Any = getattr(model, "latent_codec", None)
    gain = q if isinstance(q, GainQuantizer) else None
    codec = q.inner if gain is not None else q
    families = {
        HyperpriorQuantizer: "hyperprior",
        MeanScaleHyperpriorQuantizer: "mean-scale-hyperprior",
        CheckerboardQuantizer: "checkerboard",
    }
    family = families.get(type(codec))  # exact types: a subclass may code differently
    if family is None:
        name = model.plugin_name("quantizer") if hasattr(model, "plugin_name") else type(q).__name__
        raise UnsupportedModel(f"rdkit export onnx supports {SUPPORTED}; this model has {name}")
    if not codec.exact:
        raise UnsupportedModel("the model's entropy tables and integer networks are not built (run model.update())")
    if family == "checkerboard" and codec.y.anchor_parity != "even":
        raise UnsupportedModel("checkerboard models with odd anchor parity are not supported")
    return family, codec, gain


def _specs(family: str, M: int, N: int, means: bool) -> dict[str, GraphSpec]:
    enc, dec, both = ("compress",), ("decompress",), ("compress", "decompress")
    side = 2 * M if means else M
    specs = {
        "analysis": GraphSpec("analysis.onnx", enc, "x", "y", "float32", 3, M),
        "hyper_analysis": GraphSpec("hyper_analysis.onnx", enc, "y", "z", "float32", M, N),
        "hyper_synthesis": GraphSpec("hyper_synthesis.onnx", both, "z_grid", "side_grid", "float64", N, side),
        "synthesis": GraphSpec("synthesis.onnx", dec, "y_hat", "x_hat", "float32", M, 3),
    }
    if family == "checkerboard":
        specs["context"] = GraphSpec("context.onnx", both, "anchors_grid", "context_grid", "float64", M, 2 * M)
        specs["parameters"] = GraphSpec(
            "parameters.onnx", both, "features_grid", "params_grid", "float64", 4 * M, 2 * M
        )
    return specs


def _build_graphs(model, codec, family: str, specs: dict[str, GraphSpec], folder: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    M, N, hs = codec.channels, codec.N, codec.stride
    es = int(getattr(model.g_a, "stride", 1))

    def rand(c: int, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
        return torch.rand(1, c, h, w, generator=gen) * scale

    # Non-square examples, large enough for every kernel; the exported graphs take any size.
    G.build_float(model.g_a, rand(3, 2 * es * hs, 3 * es * hs), "encoder", specs["analysis"], folder)
    G.build_float(codec.hyper.h_a, rand(M, 2 * hs, 3 * hs, 4) - 2, "hyper analysis", specs["hyper_analysis"], folder)
    G.build_float(model.g_s, rand(M, 4, 6, 8) - 4, "decoder", specs["synthesis"], folder)
    G.build_integer(codec.exact_h_s, to_grid(rand(N, 3, 4, 8) - 4), "hyper synthesis", specs["hyper_synthesis"], folder)
    if family == "checkerboard":
        G.build_integer(codec.exact_context, to_grid(rand(M, 6, 8, 8) - 4), "context", specs["context"], folder)
        G.build_integer(
            codec.exact_parameters, to_grid(rand(4 * M, 3, 4, 8) - 4), "parameters", specs["parameters"], folder
        )


def export_model(model, recipe, folder: Path) -> Manifest:
    """Write the export of an in-memory ``model`` (eval, tables built) into the existing empty ``folder``."""
    from rdkit_ae.codec.identity import model_id

    family, codec, gain = _family(model)
    model.eval()
    M, N = int(codec.channels), int(codec.N)
    specs = _specs(family, M, N, family != "hyperprior")
    if family == "mean-scale-hyperprior" and tuple(getattr(codec.y, "chunks", ())) != ("scales", "means"):
        raise UnsupportedModel("mean-scale-hyperprior with another split of h_s's output than (scales, means)")
    with torch.no_grad():
        _build_graphs(model, codec, family, specs, folder)
        arrays = T.model_tables(codec, gain)
    T.save_tables(folder, arrays)
    manifest = Manifest(
        model_id(model, recipe),
        str(getattr(recipe, "name", "") or ""),
        family,
        M,
        N,
        int(getattr(model.g_a, "stride", 1)),
        int(codec.stride),
        specs,
        T.specs(arrays),
        tuple(float(v) for v in gain.lambdas) if gain is not None else None,
        float(gain.rate) if gain is not None else None,
        extra={
            "producer": "rdkit-ae",
            "grids": _grids(),
            "anchor_parity": "even" if family == "checkerboard" else None,
        },
    )
    write_manifest(folder, manifest)
    return manifest


def _grids() -> dict[str, object]:
    from rdkit_ae.plugin.exact import ACT_BITS, ACT_LIMIT, WEIGHT_BITS

    return {
        "activation_bits": ACT_BITS,
        "weight_bits": WEIGHT_BITS,
        "activation_limit": ACT_LIMIT,
        "z_grid": "round(z_hat * 2**activation_bits), clamped to +-activation_limit (float64)",
        "scales": "side_grid / 2**activation_bits, at least y_scale_bound; row = #(y_scale_table[:-1] < scale)",
        "y_hat": "(symbols * 2**activation_bits + means_grid) / 2**activation_bits, then float32 (times the "
        "inverse gain of a variable-rate model, in float32)",
    }


def _prepare(folder: Path, force: bool) -> None:
    """Refuse to replace anything but an earlier export (and that only with ``force``)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise RdkitError(f"-o {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / MANIFEST).is_file():
            raise RdkitError(f"-o {folder}: a folder that is not empty and not an ONNX export; choose another")
        if not force:
            raise RdkitError(f"-o {folder}: an export is already there (use --force to replace it)")


def export_onnx(checkpoint: str | Path, folder: str | Path, *, force: bool = False) -> ExportReport:
    """Export ``checkpoint`` (loaded with every check of :func:`rdkit_ae.checkpoint.load_model`) to ``folder``."""
    from rdkit_ae.checkpoint import load_model

    folder = Path(folder)
    _prepare(folder, force)
    model, recipe, _ = load_model(checkpoint)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        manifest = export_model(model, recipe, tmp)
        nbytes = sum(p.stat().st_size for p in tmp.iterdir())
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(old / "export")
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ExportReport(folder, manifest, nbytes)


__all__ = ["SUPPORTED", "ExportReport", "UnsupportedModel", "export_model", "export_onnx"]
