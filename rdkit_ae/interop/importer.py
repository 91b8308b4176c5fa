"""Import CompressAI models (pretrained or from a local ``.pth.tar``) as rdkit-ae models and checkpoints.

A CompressAI weight file is untrusted input (docs/format.md, threat model),
and goes through the checks :func:`rdkit_ae.checkpoint.load_model` applies,
each before the step it protects allocates anything:

1. the file's pickle is read alone (:mod:`rdkit_ae.interop.torch_file`): no
   code, storages the file really holds, tensors inside their storages (no
   zero-stride claims), all within the archive limit of ``load_model``;
2. N and M are read from the stored shapes and the rdkit-ae model is planned
   on fake tensors (parameter limit, stride), then the file's storages must
   fit that model's size and its shapes must be the architecture's;
3. only then ``torch.load(weights_only=True)`` reads the tensors, and
   CompressAI builds its model (``from_state_dict``, after the key renames
   its zoo applies: ``module.`` prefixes of DataParallel, old
   EntropyBottleneck names), whose canonical ``state_dict()`` is renamed into
   the rdkit-ae recipe with the same layers;
4. quantile spans and finite weights are checked before ``update()`` builds
   missing tables, the tables after it, and the entropy coders are guarded,
   as ``load_model`` does: an imported model is one ``rdkit compress``
   accepts, or nothing is written.

The pretrained route downloads into torch.hub's cache and reads that file the
same way.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import sys
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from compressai.zoo.pretrained import rename_key as compressai_rename_key

from rdkit_ae.checkpoint import (
    check_before_update,
    check_number_count,
    checkpoint_byte_limit,
    save_checkpoint,
    shape_mismatch,
)
from rdkit_ae.errors import CheckpointError, RdkitError
from rdkit_ae.guards import check_model, guard_entropy_coders
from rdkit_ae.interop.architectures import METRICS, Architecture, get_architecture, rate_weight
from rdkit_ae.interop.torch_file import FileClaims, TensorClaim, check_loaded, check_state, map_state, read_claims
from rdkit_ae.model import RDModel, assemble_model, plan_model
from rdkit_ae.recipe import Recipe, load_recipe, validate
from rdkit_ae.text import one_line

MAX_WEIGHTS_BYTES = 2 << 30  # CompressAI's largest zoo checkpoint is about 100 MB
STATE_KEYS = ("state_dict", "network", "model_state_dict")  # what CompressAI's eval_model unwraps


@dataclass
class WeightsFile:
    """A CompressAI weight file whose pickle was read and checked, its tensors not yet loaded."""

    path: Path
    claims: FileClaims
    state: dict[str, TensorClaim]  # the state dict's claims, keys renamed as CompressAI's zoo does

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: claim.shape for name, claim in self.state.items()}


def inspect_compressai_weights(path: str | Path, max_params: int | None = None) -> WeightsFile:
    """Read a CompressAI checkpoint's pickle, not its tensors, and check it (see the module docstring, step 1).

    Accepts a plain state dict (CompressAI's zoo files) or one under
    ``state_dict`` / ``network`` / ``model_state_dict`` (its training script's).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights not found: {p}" if not p.exists() else f"weights path is not a file: {p}")
    if p.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{p}: {p.stat().st_size:,} bytes is larger than a CompressAI checkpoint may be")
    limit = checkpoint_byte_limit(max_params)
    claims = read_claims(p, limit)
    state = map_state(claims.root, STATE_KEYS, compressai_rename_key)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{p}: not a CompressAI state dict (expected a dict of tensors)")
    if not all(isinstance(k, str) and isinstance(v, TensorClaim) for k, v in state.items()):
        raise CheckpointError(f"{p}: not a CompressAI state dict (it holds entries that are not named tensors)")
    check_state(str(p), state, limit)
    return WeightsFile(p, claims, state)


def load_compressai_weights(weights: WeightsFile) -> dict[str, torch.Tensor]:
    """The tensors of a checked file: ``torch.load(weights_only=True)``, then compared with the claims."""
    p = weights.path
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
    state = map_state(payload, STATE_KEYS, compressai_rename_key)
    check_loaded(str(p), state if isinstance(state, dict) else {}, weights.state)
    return state


def read_compressai_weights(path: str | Path, max_params: int | None = None) -> dict[str, torch.Tensor]:
    """A CompressAI checkpoint's state dict, read safely and with CompressAI's key renames.

    :func:`inspect_compressai_weights` then :func:`load_compressai_weights`:
    nothing the file claims is allocated before it is checked.
    """
    return load_compressai_weights(inspect_compressai_weights(path, max_params))


def _from_state_dict(arch: Architecture, state: dict[str, torch.Tensor], source: str) -> Any:
    try:
        return arch.compressai_class.from_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - missing keys, wrong shapes: the file is not this architecture
        raise CheckpointError(f"{source}: not a CompressAI {arch.name} checkpoint ({one_line(exc, 240)})") from None


def _pretrained_file(arch: Architecture, quality: int, metric: str) -> Path:
    """CompressAI's pretrained weights in torch.hub's cache, downloaded there first when absent.

    The same file ``compressai.zoo.<model>(pretrained=True)`` uses; it is read
    here like any other weight file (torch.hub would unpickle it unchecked).
    """
    url = arch.pretrained_url(quality, metric)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)
    if cached.exists():
        return cached
    print(f'Downloading: "{url}" to {cached}', file=sys.stderr)  # what torch.hub says before a download
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), None, progress=False)  # a temp file, renamed when complete
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
        raise RdkitError(
            f"cannot download CompressAI's pretrained {arch.name} quality {quality} ({metric}): "
            f"{one_line(exc, 120)}; download it where there is internet and pass --weights FILE.pth.tar"
        ) from None
    return cached


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


def _planned(
    arch: Architecture, weights: WeightsFile, source: str, quality: int | None, metric: str, max_params: int | None
) -> Recipe:
    """Step 2: the recipe the stored shapes describe, planned on fake tensors, and the file checked against it."""
    sizes = arch.stored_sizes(weights.shapes)
    if sizes is None:
        what = "no 4-D 'g_a.0.weight' and 'g_a.6.weight'"
        raise CheckpointError(f"{source}: not a CompressAI {arch.name} checkpoint ({what})")
    N, M = sizes
    if quality is not None and (N, M) != arch.sizes(quality):
        want_N, want_M = arch.sizes(quality)
        raise RdkitError(
            f"{source}: weights have N={N}, M={M}, but {arch.name} quality {quality} has N={want_N}, M={want_M}; "
            "give the quality they were trained for (or none)"
        )
    recipe = None
    try:
        recipe = imported_recipe(arch, N, M, quality, metric, source)
        # Fake tensors: N=2500 costs nothing here, where building it (memory grows with N**2) would cost gigabytes.
        shapes = plan_model(recipe, max_params) or {}
    except RdkitError as exc:
        msg = str(exc).removeprefix(f"{recipe.source}: ") if recipe is not None else str(exc)
        raise CheckpointError(f"{source}: refused: weights with N={N}, M={M}: {msg}") from None
    wrong = shape_mismatch(arch.to_compressai(shapes), weights.shapes)
    if wrong is not None:
        name, have, want = wrong
        raise CheckpointError(
            f"{source}: not a CompressAI {arch.name} checkpoint ('{name}' is {have}; N={N}, M={M} give {want})"
        )
    # What a model of this size may bring: its weights, optimizer state and tables (load_model's bound, per model).
    limit = checkpoint_byte_limit(sum(math.prod(shape) for shape in shapes.values()))
    if weights.claims.stored_bytes > limit:
        raise CheckpointError(
            f"{source}: refused: its storages unpack to {weights.claims.stored_bytes:,} bytes, more than the "
            f"{limit:,} a model with N={N}, M={M} may bring"
        )
    check_state(source, weights.state, limit)
    return recipe


def _rdkit_model(arch: Architecture, recipe: Recipe, state: dict[str, torch.Tensor], source: str) -> RDModel:
    """Steps 3 and 4: CompressAI's model from the state, checked, renamed into the planned rdkit-ae model."""
    ca_model = _from_state_dict(arch, state, source)
    # On CompressAI's model, so that errors name the weights as the file does; rdkit-ae's gets the same values.
    check_before_update(ca_model, source)  # a huge quantile span would make update() allocate its length
    ca_state = ca_model.state_dict()
    del ca_model, state
    rd_model = assemble_model(recipe)  # planned in _planned
    try:
        rd_model.load_state_dict(arch.to_rdkit(ca_state))
    except RuntimeError as exc:
        msg = one_line(exc, 240)
        raise RdkitError(f"{source}: weights do not fit rdkit-ae's {arch.recipe} recipe ({msg})") from None
    return rd_model.eval()


def import_compressai(
    model: str,
    quality: int | None = None,
    weights: str | Path | None = None,
    metric: str = "mse",
    *,
    max_params: int | None = None,
) -> tuple[RDModel, Recipe]:
    """A CompressAI model as an rdkit-ae ``(RDModel, Recipe)``, in eval mode with its entropy tables ready.

    Without ``weights``, CompressAI's pretrained ``model`` at ``quality``
    (torch.hub's cache, downloaded when absent). With ``weights``, a local
    CompressAI checkpoint; ``quality`` is then optional (the sizes come from
    the weights) and, when given, must match them. Entropy tables stored with
    the weights are kept as they are; missing ones are computed (``update()``).
    Every check of :func:`rdkit_ae.checkpoint.load_model` applies (see the
    module docstring; ``max_params`` as there), each before what it protects.
    """
    arch = get_architecture(model)
    if metric not in METRICS:
        raise RdkitError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if quality is not None:
        arch.sizes(quality)  # validates the quality
    if weights is None:
        if quality is None:
            raise RdkitError("give --quality (CompressAI's pretrained models are per quality) or --weights FILE")
        weights = _pretrained_file(arch, quality, metric)
        source = f"compressai.zoo (pretrained, {metric}; {weights})"
    else:
        source = str(weights)
    checked = inspect_compressai_weights(weights, max_params)
    recipe = _planned(arch, checked, source, quality, metric, max_params)
    rd_model = _rdkit_model(arch, recipe, load_compressai_weights(checked), source)
    rd_model.update()  # only where the weights brought no tables
    check_model(rd_model, source)
    check_number_count(source, rd_model.state_dict(), max_params)
    guard_entropy_coders(rd_model)  # finite weights can still overflow to NaN latents: the guard refuses those
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


__all__ = [
    "WeightsFile",
    "import_compressai",
    "import_compressai_checkpoint",
    "imported_recipe",
    "inspect_compressai_weights",
    "load_compressai_weights",
    "read_compressai_weights",
]
