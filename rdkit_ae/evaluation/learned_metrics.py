"""LPIPS, computed only when its ImageNet backbone weights are on this machine (nothing is downloaded).

The `lpips` package ships LPIPS's calibrated linear heads; its backbone
(torchvision's ImageNet AlexNet or VGG-16) is read from, in order:

1. the file named by ``--lpips-weights`` or ``RDKIT_LPIPS_BACKBONE``;
2. torch's hub cache: ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``
   (or ``vgg16-397923af.pth``), where ``torchvision.models.alexnet(weights="DEFAULT")``
   leaves it.

The network (``alex`` or ``vgg``) follows from the file's first convolution.
Without a file, :class:`MissingWeightsError` says in one line how to get one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rdkit_ae.errors import RdkitError

ENV = "RDKIT_LPIPS_BACKBONE"
HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
URL = "https://download.pytorch.org/models/"
_CACHE: dict[str, Any] = {}


class MissingWeightsError(RdkitError):
    """No backbone weights for a learned metric or loss."""


def _hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def how_to_get() -> str:
    return (
        f"LPIPS needs torchvision's ImageNet AlexNet (or VGG-16) weights, which are not downloaded here: fetch "
        f"{URL}{HUB_FILES['alex']} into {_hub_dir()}, or name the file with --lpips-weights or {ENV}"
    )


def backbone_path(
    metric: str, explicit: str | Path | None, env: str, flag: str, hub_files: Sequence[str], hint: Callable[[], str]
) -> Path:
    """A learned metric's backbone file: ``explicit`` (from ``flag``), else ``$env``, else the first of
    ``hub_files`` in torch's hub cache; :class:`MissingWeightsError` (one line, ``hint()``) when there is none."""
    given = explicit or os.environ.get(env)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{metric} backbone weights not found: {path} ({flag if explicit else env})")
        return path
    for name in hub_files:
        if (_hub_dir() / name).is_file():
            return _hub_dir() / name
    raise MissingWeightsError(hint())


def lpips_backbone_path(explicit: str | Path | None = None) -> Path:
    """The backbone file to use; :class:`MissingWeightsError` (one line) when there is none."""
    return backbone_path("LPIPS", explicit, ENV, "--lpips-weights", list(HUB_FILES.values()), how_to_get)


def _features_state(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise RdkitError(f"cannot read LPIPS backbone weights {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RdkitError(f"{path}: not a state dict of torchvision AlexNet or VGG-16 weights")
    out = {k[len("features.") :]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    if "0.weight" not in out:
        raise RdkitError(f"{path}: no 'features.0.weight': not torchvision AlexNet or VGG-16 weights")
    return out


def load_lpips(path: str | Path | None = None):
    """An eval-mode ``lpips.LPIPS`` with the package's linear heads and the backbone from ``path`` (or as found
    by :func:`lpips_backbone_path`); cached per file."""
    import lpips
    import torch

    file = lpips_backbone_path(path)
    key = str(file.resolve())
    if key in _CACHE:
        return _CACHE[key]
    state = _features_state(file)
    net = "alex" if tuple(state["0.weight"].shape[-2:]) == (11, 11) else "vgg"
    with warnings.catch_warnings():  # torchvision's and torch.jit's deprecation notes, not ours to act on
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    for slice_ in (m for name, m in model.net.named_children() if name.startswith("slice")):
        for idx, layer in slice_.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                try:
                    layer.load_state_dict({"weight": state[f"{idx}.weight"], "bias": state[f"{idx}.bias"]})
                except (KeyError, RuntimeError):
                    raise RdkitError(f"{file}: features.{idx} missing or of the wrong shape for LPIPS-{net}") from None
    model.eval().requires_grad_(False)
    _CACHE[key] = model
    return model


def learned_metric(name: str, original: np.ndarray, decoded: np.ndarray) -> list[float | None]:
    """LPIPS per image of uint8 (N, H, W, 3) batches; None where a side is under 32 pixels."""
    import torch

    if name != "lpips":
        raise RdkitError(f"unknown learned metric {name!r}")
    if min(original.shape[1:3]) < 32:
        return [None] * len(original)
    model = load_lpips()

    def scaled(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0

    with torch.no_grad():
        out = model(scaled(original), scaled(decoded), normalize=True)
    return [float(v) for v in out.reshape(-1)]
