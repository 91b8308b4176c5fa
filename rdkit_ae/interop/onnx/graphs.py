"""The graphs of an export: float transforms through ``torch.onnx.export``, integer networks built exactly.

Every graph has one input and one output, NCHW with dynamic height and width,
and is checked with ``onnx.checker`` (full check, shape inference) and run once
in ONNX Runtime against torch before the export is accepted: the integer
graphs must give the same integers, the float ones agree to float rounding.

torch 2.14 offers two exporters; the TorchScript one (``dynamo=False``) is
used: it handles the zoo's transforms (GDN, pixel shuffles) in well under a
second per graph and needs no onnxscript, where the dynamo one takes seconds
per graph.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.interop.onnx import deps
from rdkit_ae.interop.onnx.integer_graph import OPSET, integer_graph
from rdkit_ae.interop.onnx.manifest import GraphSpec

FLOAT_TOLERANCE = 1e-3  # relative to the output's range: float32 graphs in another runtime round differently


class ExportCheckError(RdkitError):
    """A graph that failed the checker or gave other values in ONNX Runtime than in torch."""


def session(model_bytes: bytes, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one by default, like the torch codec)."""
    ort = deps.onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def float_graph(module, example, name: str, in_name: str, out_name: str) -> bytes:
    """A float32 torch module as ONNX bytes (TorchScript exporter, dynamic batch, height and width)."""
    import torch

    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            path = Path(tmp) / "graph.onnx"
            torch.onnx.export(
                module.eval(),
                (example,),
                path,
                input_names=[in_name],
                output_names=[out_name],
                dynamic_axes={in_name: axes, out_name: {0: "batch", 2: "out_height", 3: "out_width"}},
                opset_version=OPSET,
                dynamo=False,
            )
            return path.read_bytes()
    except Exception as exc:  # noqa: BLE001 - any exporter failure is "this part cannot be exported"
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RdkitError(f"cannot export the {name} to ONNX ({msg})") from None


def check_graph(data: bytes, name: str) -> None:
    """``onnx.checker`` with shape inference; one line on failure."""
    onnx = deps.onnx()
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several kinds
        raise ExportCheckError(f"graph '{name}' fails onnx.checker: {str(exc).splitlines()[0][:200]}") from None


def compare(data: bytes, name: str, inp, reference, exact: bool) -> None:
    """Run the graph on ``inp`` in ONNX Runtime and compare with torch's ``reference`` (exactly, or to rounding)."""
    out = session(data).run(None, {session_input(data): inp})[0]
    if out.shape != reference.shape:
        raise ExportCheckError(f"graph '{name}' gives shape {out.shape} in ONNX Runtime, torch {reference.shape}")
    if exact:
        if not np.array_equal(out, reference):
            raise ExportCheckError(f"integer graph '{name}' gives other integers in ONNX Runtime than in torch")
        return
    scale = max(float(np.abs(reference).max()), 1.0)
    err = float(np.abs(out.astype(np.float64) - reference).max())
    if not err <= FLOAT_TOLERANCE * scale:
        raise ExportCheckError(f"graph '{name}' differs from torch by {err:.3g} (output range {scale:.3g})")


def session_input(data: bytes) -> str:
    return deps.onnx().load_model_from_string(data).graph.input[0].name


def build_float(module, example, name: str, spec: GraphSpec, folder: Path) -> None:
    """Export, check and compare one float32 graph; write it as ``spec.file``."""
    import torch

    data = float_graph(module, example, name, spec.input, spec.output)
    check_graph(data, name)
    with torch.no_grad():
        reference = module(example).detach().cpu().numpy()
    compare(data, name, example.cpu().numpy(), reference, exact=False)
    (folder / spec.file).write_bytes(data)


def build_integer(net, example, name: str, spec: GraphSpec, folder: Path) -> None:
    """Build, check and compare (bit for bit) one integer network's float64 graph; write it as ``spec.file``."""
    data = integer_graph(net, name, spec.input, spec.output).SerializeToString()
    check_graph(data, name)
    compare(data, name, example.cpu().numpy(), net(example).cpu().numpy(), exact=True)
    (folder / spec.file).write_bytes(data)


__all__ = ["ExportCheckError", "build_float", "build_integer", "check_graph", "session"]
