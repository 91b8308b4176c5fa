"""Import CompressAI models (pretrained or from a local ``.pth.tar``) as rdkit-ae models and checkpoints.

The CompressAI model is first built by CompressAI itself (``from_state_dict``,
after the key renames its zoo applies to its own checkpoints), so every
convention CompressAI reads (``module.`` prefixes of DataParallel, old
EntropyBottleneck parameter names, CDF buffers of any size) is handled by the
library; its canonical ``state_dict()`` is then renamed into the rdkit-ae
recipe with the same layers.
"""

from __future__ import annotations

import copy
import pickle
import urllib.error
from pathlib import Path
from typing import Any

import torch
from compressai.zoo import load_state_dict as compressai_rename_keys

from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.interop.architectures import METRICS, Architecture, get_architecture, rate_weight
from rdkit_ae.model import RDModel, build_model
from rdkit_ae.recipe import Recipe, load_recipe, validate
from rdkit_ae.text import one_line

MAX_WEIGHTS_BYTES = 2 << 30  # CompressAI's largest zoo checkpoint is about 100 MB
STATE_KEYS = ("state_dict", "network", "model_state_dict")  # what CompressAI's eval_model unwraps


def read_compressai_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A CompressAI checkpoint's state dict, read safely (``weights_only=True``) and with CompressAI's key renames.

    Accepts a plain state dict (CompressAI's zoo files) or one under
    ``state_dict`` / ``network`` / ``model_state_dict`` (its training script's).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights not found: {p}" if not p.exists() else f"weights path is not a file: {p}")
    if p.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{p}: {p.stat().st_size:,} bytes is larger than a CompressAI checkpoint may be")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's first line is generic advice; the line naming a refused global says what was found.
        lines = [ln.strip() for ln in str(exc).splitlines()]
        found = next((ln for ln in lines if "GLOBAL" in ln), None)
        if found is None:
            raise CheckpointError(f"{p}: not a readable PyTorch checkpoint (corrupt or another format)") from None
        raise CheckpointError(
            f"{p}: refused: the file holds pickled objects that safe loading does not allow ({found[:160]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file can raise anything
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint ({one_line(exc, 200)})") from None
    if isinstance(payload, dict):
        for key in STATE_KEYS:
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"{p}: not a CompressAI state dict (expected a dict of tensors)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise CheckpointError(f"{p}: not a CompressAI state dict (it holds entries that are not named tensors)")
    return compressai_rename_keys(payload)


def _from_state_dict(arch: Architecture, state: dict[str, torch.Tensor], source: str) -> Any:
    try:
        return arch.compressai_class.from_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - missing keys, wrong shapes: the file is not this architecture
        raise CheckpointError(f"{source}: not a CompressAI {arch.name} checkpoint ({one_line(exc, 240)})") from None


def _pretrained(arch: Architecture, quality: int, metric: str) -> Any:
    """CompressAI's pretrained model, downloaded by torch.hub (or taken from its cache)."""
    try:
        return arch.zoo_function(quality=quality, metric=metric, pretrained=True, progress=False)
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
        raise RdkitError(
            f"cannot download CompressAI's pretrained {arch.name} quality {quality} ({metric}): "
            f"{one_line(exc, 120)}; download it where there is internet and pass --weights FILE.pth.tar"
        ) from None
    except RuntimeError as exc:  # "Pre-trained model not yet available", or a corrupt download
        raise RdkitError(f"CompressAI {arch.name} quality {quality} ({metric}): {one_line(exc, 200)}") from None


def imported_recipe(arch: Architecture, N: int, M: int, quality: int | None, metric: str, source: str) -> Recipe:
    """The rdkit-ae recipe of ``arch`` at sizes N, M, its losses those CompressAI trained ``quality`` with."""
    recipe = load_recipe(arch.recipe, arch.overrides(N, M))
    data = copy.deepcopy(recipe.data)
    q = f" quality {quality}" if quality is not None else ""
    data["description"] = f"CompressAI {arch.name}{q} ({metric}, N={N}, M={M}) imported from {source}"
    if quality is not None:
        weight = rate_weight(metric, quality)
        distortion = {"name": "mse", "weight": 1.0} if metric == "mse" else {"name": "ms-ssim", "weight": 1.0}
        data["loss"] = [distortion, {"name": "rate", "weight": weight}]
    return Recipe(f"{arch.name}-q{quality}" if quality is not None else arch.name, recipe.source, validate(data))


def import_compressai(
    model: str, quality: int | None = None, weights: str | Path | None = None, metric: str = "mse"
) -> tuple[RDModel, Recipe]:
    """A CompressAI model as an rdkit-ae ``(RDModel, Recipe)``, in eval mode with its entropy tables ready.

    Without ``weights``, CompressAI's pretrained ``model`` at ``quality`` is
    loaded the usual way (``compressai.zoo.<model>(quality, pretrained=True)``,
    torch.hub cache). With ``weights``, a local CompressAI checkpoint is read
    instead; ``quality`` is then optional (the sizes come from the weights) and,
    when given, must match them. Entropy tables stored with the weights are
    kept as they are; missing ones are computed (``update()``).
    """
    arch = get_architecture(model)
    if metric not in METRICS:
        raise RdkitError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if quality is not None:
        arch.sizes(quality)  # validates the quality
    if weights is None:
        if quality is None:
            raise RdkitError("give --quality (CompressAI's pretrained models are per quality) or --weights FILE")
        ca_model = _pretrained(arch, quality, metric)
        source = f"compressai.zoo (pretrained, {metric})"
    else:
        source = str(weights)
        ca_model = _from_state_dict(arch, read_compressai_weights(weights), source)
    N, M = int(ca_model.N), int(ca_model.M)
    if quality is not None and (N, M) != arch.sizes(quality):
        want_N, want_M = arch.sizes(quality)
        raise RdkitError(
            f"{source}: weights have N={N}, M={M}, but {arch.name} quality {quality} has N={want_N}, M={want_M}; "
            "give the quality they were trained for (or none)"
        )
    recipe = imported_recipe(arch, N, M, quality, metric, source)
    rd_model = build_model(recipe)
    try:
        rd_model.load_state_dict(arch.to_rdkit(ca_model.state_dict()))
    except RuntimeError as exc:
        msg = one_line(exc, 240)
        raise RdkitError(f"{source}: weights do not fit rdkit-ae's {arch.recipe} recipe ({msg})") from None
    rd_model.eval()
    rd_model.update()  # only where the weights brought no tables
    return rd_model, recipe


def import_compressai_checkpoint(
    output: str | Path,
    model: str,
    quality: int | None = None,
    weights: str | Path | None = None,
    metric: str = "mse",
) -> tuple[RDModel, Recipe]:
    """:func:`import_compressai`, then save an rdkit-ae checkpoint at ``output`` (for eval, compress, bench)."""
    rd_model, recipe = import_compressai(model, quality, weights, metric)
    origin = {"compressai": model, "quality": -1 if quality is None else int(quality), "metric": metric}
    origin["weights"] = str(weights) if weights is not None else "pretrained"
    save_checkpoint(output, rd_model, recipe, imported_from=origin)
    return rd_model, recipe


__all__ = ["import_compressai", "import_compressai_checkpoint", "imported_recipe", "read_compressai_weights"]
