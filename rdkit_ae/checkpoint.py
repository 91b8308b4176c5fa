"""Checkpoints: weights + the resolved recipe, safe to load (``weights_only=True``).

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only: no
pickled classes, so ``torch.load(path, weights_only=True)`` can read it and
nothing in it can run code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.recipe import Recipe

FORMAT = "rdkit-ae-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: torch.nn.Module, recipe: Recipe, **extra: Any) -> None:
    """Write weights, the resolved recipe and any ``extra`` state atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": recipe.to_toml(),
        "recipe_name": recipe.name,
        "model": model.state_dict(),
        **extra,
    }
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything else with a clear error."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    # torch.save has written zip archives since torch 1.6; anything else (including
    # a bare pickle) is not ours, and torch would describe it confusingly.
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{p}: not a readable checkpoint (not a PyTorch zip archive)")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # torch's first line is generic advice; the line naming the refused global says what was found.
        detail = next(
            (ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0] if lines else "unsupported content"
        )
        raise CheckpointError(
            f"{p}: refused: the checkpoint holds pickled code or objects that safe loading does not allow ({detail[:200]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a corrupt archive or pickle can raise anything (KeyError, TypeError, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint ({msg[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an rdkit-ae checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: checkpoint version {payload.get('version')!r} is not supported (expected {VERSION})"
        )
    if not isinstance(payload.get("recipe"), str) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{p}: checkpoint lacks its recipe or weights")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model stored in a checkpoint: ``(model, recipe, payload)``.

    The model is in eval mode with its entropy models ready to code: tables
    stored in the checkpoint are used as they are (so encoder and decoder
    machines share them), and computed on the CPU only where absent.
    """
    from rdkit_ae.model import build_model

    payload = load_checkpoint(path, map_location)
    try:
        recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", Path(path).stem), f"{path}:recipe")
        model = build_model(recipe)
        model.load_state_dict(payload["model"])
    except RdkitError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted content: any failure to rebuild is the file's fault
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: weights do not fit the stored recipe ({msg[:300]})") from None
    model.eval()
    _check_quantiles(model, path)
    model.update()
    return model, recipe, payload


def _check_quantiles(model: torch.nn.Module, path: str | Path) -> None:
    """Refuse entropy-bottleneck quantiles that would make ``update()`` build absurd tables.

    ``update()`` allocates a CDF as long as the quantile range, so a crafted
    range of 1e12 would exhaust memory before anything else could object.
    """
    from compressai.entropy_models import EntropyBottleneck

    for name, m in model.named_modules():
        if isinstance(m, EntropyBottleneck):
            q = m.quantiles.detach()
            span = q[:, 0, 2] - q[:, 0, 0]
            if not bool(torch.isfinite(q).all()) or bool((span.abs() > 1 << 16).any()):
                raise CheckpointError(f"{path}: entropy model '{name}' has non-finite or absurd quantiles")
