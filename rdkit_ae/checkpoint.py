"""Checkpoints: weights + the resolved recipe, safe to load (``weights_only=True``).

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only: no
pickled classes, so ``torch.load(path, weights_only=True)`` can read it and
nothing in it can run code.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from compressai.entropy_models import EntropyBottleneck

from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.guards import check_finite_weights, check_model, guard_entropy_coders
from rdkit_ae.model import MAX_PARAMS_ENV, assemble_model, param_limit, plan_model
from rdkit_ae.recipe import Recipe
from rdkit_ae.text import one_line

FORMAT = "rdkit-ae-checkpoint"
VERSION = 1
DIGEST_KEY = "model_sha256"  # absent from checkpoints written before it existed; they still load


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
    write_checkpoint(path, payload)


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint payload atomically, with a fresh digest of its weights."""
    payload = {**payload, DIGEST_KEY: state_digest(payload["model"])}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def state_digest(state: Mapping[str, Any]) -> str:
    """sha256 over every tensor of a state dict: names, dtypes, shapes and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(value.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def checkpoint_byte_limit(max_params: int | None = None) -> int:
    """Largest total the archive's members may unpack to: weights plus optimizer state (x4) and slack."""
    limit = param_limit() if max_params is None else int(max_params)
    return 16 * limit + (256 << 20)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, max_params: int | None = None
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything else with a clear error.

    The archive may unpack to at most :func:`checkpoint_byte_limit` bytes, its
    weights hold at most twice ``max_params`` elements (default
    :func:`rdkit_ae.model.param_limit`), and a stored digest must match them.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    # torch.save has written zip archives since torch 1.6; anything else (including
    # a bare pickle) is not ours, and torch would describe it confusingly.
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{p}: not a readable checkpoint (not a PyTorch zip archive)")
    check_archive_size(p, checkpoint_byte_limit(max_params))
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # torch's first line is generic advice; the line naming the refused global says what was found.
        detail = next(
            (ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0] if lines else "unsupported content"
        )
        raise CheckpointError(
            f"{p}: refused: the checkpoint holds pickled code or objects that safe loading does not allow "
            f"({detail[:200]})"
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
    _check_weights(p, payload, max_params)
    return payload


def check_archive_size(p: Path, limit: int, hint: str = f"set {MAX_PARAMS_ENV} to allow larger models") -> None:
    """Refuse, before torch reads it, an archive whose members would unpack to more than ``limit`` bytes.

    The sizes are the central directory's, which torch's reader allocates
    for each record it reads (``hint`` ends the message).
    """
    try:
        with zipfile.ZipFile(p) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: not a readable checkpoint ({one_line(exc, 200)})") from None
    if total > limit:
        raise CheckpointError(
            f"{p}: refused: the archive unpacks to {total:,} bytes, more than the limit of {limit:,} ({hint})"
        )


def _check_weights(p: Path, payload: dict[str, Any], max_params: int | None) -> None:
    state = payload["model"]
    check_storage_claims(p, state)
    check_number_count(p, state, max_params)
    digest = payload.get(DIGEST_KEY)
    if digest is None:
        return  # written before digests were stored
    if not isinstance(digest, str) or digest != state_digest(state):
        raise CheckpointError(
            f"{p}: the weights do not match their stored digest (the file is corrupted or was edited)"
        )


def check_storage_claims(where: str | Path, state: Mapping[str, Any]) -> None:
    """Refuse tensors that claim more numbers than their storage holds (a zero or overlapping stride).

    Such a view costs nothing when loaded, but the digest, ``load_state_dict``
    and the entropy tables copy it in full: 8 stored numbers can claim
    hundreds of millions.
    """
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        room = value.untyped_storage().nbytes() // max(value.element_size(), 1) - value.storage_offset()
        if value.numel() > max(room, 0):
            raise CheckpointError(
                f"{where}: refused: tensor '{name}' of shape {tuple(value.shape)} claims {value.numel():,} numbers "
                f"from a storage holding {max(room, 0):,} (a zero or overlapping stride)"
            )


def check_number_count(where: str | Path, state: Mapping[str, Any], max_params: int | None = None) -> None:
    """Refuse weights holding more numbers than twice the parameter limit (parameters plus entropy tables)."""
    limit = param_limit() if max_params is None else int(max_params)
    count = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    # Parameters plus buffers (entropy tables): twice the parameter limit is generous.
    if count > 2 * limit:
        raise CheckpointError(
            f"{where}: refused: the weights hold {count:,} numbers, more than the limit of {2 * limit:,}"
        )


def load_model(path: str | Path, map_location: str | torch.device = "cpu", *, max_params: int | None = None):
    """Rebuild the model stored in a checkpoint: ``(model, recipe, payload)``.

    The model is in eval mode with its entropy models ready to code: tables
    stored in the checkpoint are used as they are (so encoder and decoder
    machines share them), and computed on the CPU only where absent.

    A checkpoint is untrusted: NaN or infinite weights and malformed entropy
    tables are refused (:func:`rdkit_ae.guards.check_model`), and the model's
    entropy coders are guarded (:func:`rdkit_ae.guards.guard_entropy_coders`),
    so ``model.compress``/``decompress`` cannot crash or hang the C++ coder.
    Every command that codes with a checkpoint loads it here.
    """
    payload = load_checkpoint(path, map_location, max_params=max_params)
    try:
        recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", Path(path).stem), f"{path}:recipe")
        # Planned on fake tensors first: a crafted recipe is refused before it can allocate anything.
        shapes = plan_model(recipe, max_params)
        _check_shapes(path, shapes, payload["model"])
        model = assemble_model(recipe)
        model.load_state_dict(payload["model"])
    except CheckpointError:
        raise
    except RdkitError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted content: any failure to rebuild is the file's fault
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: weights do not fit the stored recipe ({msg[:300]})") from None
    model.eval()
    check_before_update(model, path)
    model.update()
    check_model(model, str(path))
    guard_entropy_coders(model)
    return model, recipe, payload


def _check_shapes(path: str | Path, shapes: dict[str, tuple[int, ...]] | None, state: dict[str, Any]) -> None:
    """Stored parameters must have the shapes the recipe's model gives them."""
    stored = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    wrong = shape_mismatch(shapes, stored)
    if wrong is not None:
        name, have, shape = wrong
        raise CheckpointError(
            f"{path}: weights do not fit the stored recipe ('{name}' is {have}, the recipe gives {shape})"
        )


def shape_mismatch(
    shapes: Mapping[str, tuple[int, ...]] | None, stored: Mapping[str, tuple[int, ...]]
) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """The first planned parameter whose stored shape differs: ``(name, stored, planned)``; None if all fit."""
    for name, shape in (shapes or {}).items():
        have = stored.get(name)
        if have is not None and tuple(have) != shape:
            return name, tuple(have), shape
    return None


def check_before_update(model: torch.nn.Module, where: str | Path) -> None:
    """What must hold before ``update()`` builds tables: sane quantile spans, then finite weights.

    Both would otherwise make ``update()`` misbehave: a huge span allocates a
    table as long as it, NaN quantiles or weights give NaN tables.
    """
    _check_quantiles(model, where)
    check_finite_weights(model, str(where))


def _check_quantiles(model: torch.nn.Module, path: str | Path) -> None:
    """Refuse entropy-bottleneck quantiles that would make ``update()`` build absurd tables.

    ``update()`` allocates a CDF as long as the quantile range, so a crafted
    range of 1e12 would exhaust memory before anything else could object.
    """
    for name, m in model.named_modules():
        if isinstance(m, EntropyBottleneck):
            q = m.quantiles.detach()
            span = q[:, 0, 2] - q[:, 0, 0]
            if not bool(torch.isfinite(q).all()) or bool((span.abs() > 1 << 16).any()):
                raise CheckpointError(f"{path}: entropy model '{name}' has non-finite or absurd quantiles")
