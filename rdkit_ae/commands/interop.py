"""``rdkit import compressai`` and ``rdkit export compressai`` (API: :mod:`rdkit_ae.interop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rdkit_ae.commands.app import app, handle_errors, new_app
from rdkit_ae.commands.outputs import FORCE_HELP, check_outputs

import_app = new_app(help="Import models from other libraries as rdkit-ae checkpoints.")
export_app = new_app(help="Export rdkit-ae checkpoints to other libraries.")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

SUPPORTED = "bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean"


def _console():
    from rich.console import Console

    return Console(highlight=False)


@import_app.command("compressai")
@handle_errors
def import_compressai(
    model: str = typer.Argument(..., help=f"CompressAI zoo model: {SUPPORTED}."),
    quality: Optional[int] = typer.Option(
        None, "--quality", "-q", help="CompressAI quality (1-8); optional with --weights (sizes come from the file)."
    ),
    weights: Optional[Path] = typer.Option(
        None, "--weights", "-w", help="Local CompressAI checkpoint (.pth.tar) instead of the pretrained download."
    ),
    metric: str = typer.Option("mse", "--metric", help="Pretrained for 'mse' or 'ms-ssim'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Checkpoint to write (default: MODEL-qQ.pt)."),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
) -> None:
    """Import a CompressAI model (pretrained, or --weights FILE) as an rdkit-ae checkpoint.

    The checkpoint works with `rdkit eval`, `rdkit compress` and `rdkit bench`
    like a trained one; `rdkit train --resume` does not apply (no optimiser state).
    """
    from rdkit_ae.interop import import_compressai_checkpoint

    if output is None:
        output = Path(f"{model}-q{quality}.pt" if quality is not None else f"{model}.pt")
    check_outputs([("-o", output)], [weights] if weights is not None else [], force=force)
    rd_model, recipe = import_compressai_checkpoint(output, model, quality, weights, metric)
    params = sum(p.numel() for p in rd_model.parameters())
    console = _console()
    console.print(f"{recipe.description}")
    console.print(f"wrote {output} ({params:,} parameters, stride {rd_model.stride})")
    console.print(f"next: rdkit eval {output} --data IMAGES   |   rdkit compress IMAGE -m {output}")


@export_app.command("compressai")
@handle_errors
def export_compressai(
    checkpoint: Path = typer.Argument(..., help="rdkit-ae checkpoint (.pt) of a CompressAI-shaped model."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="CompressAI checkpoint to write (default: CHECKPOINT with .pth.tar)."
    ),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
) -> None:
    """Export an rdkit-ae checkpoint as a CompressAI checkpoint (plain state dict).

    Only models that are layer for layer a CompressAI architecture
    (bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean) can be exported; CompressAI reads the file with
    `python -m compressai.utils.eval_model checkpoint IMAGES -a ARCH -p OUT`.
    """
    from rdkit_ae.interop import export_compressai as export

    if output is None:
        output = checkpoint.with_suffix(".pth.tar")
    check_outputs([("-o", output)], [checkpoint], force=force)
    arch, ca_model = export(checkpoint, output)
    console = _console()
    console.print(f"wrote {output}: CompressAI {arch.name} (N={ca_model.N}, M={ca_model.M})")
    console.print(f"read it: python -m compressai.utils.eval_model checkpoint IMAGES -a {arch.name} -p {output}")


@export_app.command("onnx")
@handle_errors
def export_onnx(
    checkpoint: Path = typer.Argument(
        ..., help="rdkit-ae checkpoint (.pt): a hyperprior-family model (or 'gain' over one)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="folder to write (graphs, tables.npz, manifest.json)."),
    force: bool = typer.Option(False, "--force", "-f", help="replace an earlier ONNX export in that folder."),
) -> None:
    """Export a checkpoint as ONNX graphs, entropy tables and a manifest (needs pip install 'rdkit-ae[onnx]').

    Decode .rdk files with it: `rdkit decompress FILE.rdk --backend onnx --onnx DIR`, or
    from another runtime (docs/interop.md, "ONNX and non-Python decoders").
    """
    from rdkit_ae.interop.onnx import deps
    from rdkit_ae.interop.onnx.export import export_onnx as export

    deps.onnx(), deps.onnxruntime()
    report = export(checkpoint, output, force=force)
    m = report.manifest
    console = _console()
    console.print(
        f"wrote {output}: model {m.model_id.hex()} ({m.family}), {len(m.graphs)} graphs, {report.nbytes:,} bytes"
    )
    console.print(f"decode: rdkit decompress FILE.rdk --backend onnx --onnx {output}")
