"""DISTS, computed only when torchvision's ImageNet VGG-16 weights are on this machine (nothing is downloaded).

DISTS (Ding, Ma, Wang, Simoncelli, "Image Quality Assessment: Unifying
Structure and Texture Similarity", TPAMI 2020) compares two images through
six representations: the image itself (stage 0) and VGG-16's relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3 maps, where the network's max pooling
is replaced by L2 pooling (the square root of a 3x3 Hanning-weighted mean of
squares, stride 2), which does not alias. For each channel j of stage i, with
global spatial means mu, variances sigma^2 and covariance sigma_xy::

    texture   l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    structure s = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2)
    DISTS = 1 - sum_ij (alpha_ij l_ij + beta_ij s_ij),   sum(alpha) + sum(beta) = 1

with c1 = c2 = 1e-6. ``alpha`` and ``beta`` (1475 each) are the paper's
calibrated weights, shipped as ``weights.pt`` in the ``DISTS_pytorch``
package. The backbone is read from, in order: the file named by
``--dists-weights`` or ``RDKIT_DISTS_BACKBONE``, then torch's hub cache
(``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``, where
``torchvision.models.vgg16(weights="DEFAULT")`` leaves it). Without one,
:class:`MissingWeightsError` says in one line how to get it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.learned_metrics import URL, _hub_dir, backbone_path

ENV = "RDKIT_DISTS_BACKBONE"
HUB_FILE = "vgg16-397923af.pth"
MIN_SIDE = 32  # relu5_3 is 2x2 at 32x32; at 1x1 (below 32) its structure term would be 1 whatever the images
_CACHE: dict[str, Any] = {}


def how_to_get() -> str:
    return (
        f"DISTS needs torchvision's ImageNet VGG-16 weights (through conv5_3), which are not downloaded here: "
        f"fetch {URL}{HUB_FILE} into {_hub_dir()}, or name the file with --dists-weights or {ENV}"
    )


def dists_backbone_path(explicit: str | Path | None = None) -> Path:
    """The VGG-16 file to use; :class:`MissingWeightsError` (one line) when there is none."""
    return backbone_path("DISTS", explicit, ENV, "--dists-weights", [HUB_FILE], how_to_get)


def _load(path: Path, what: str) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise RdkitError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from None


def heads_path() -> Path:
    """``weights.pt`` inside the installed DISTS_pytorch package (found without importing it: its import pulls
    in torchvision's model zoo)."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / "weights.pt").is_file():
            return Path(folder) / "weights.pt"
    raise RdkitError("DISTS needs the DISTS_pytorch package's weights.pt: pip install DISTS_pytorch==0.1")


def load_heads(path: Path | None = None) -> tuple[Any, Any]:
    """``(alpha, beta)``, each a float32 vector of 1475 weights, normalised so that together they sum to 1."""
    import torch

    from rdkit_ae.evaluation.dists_net import CHANNELS

    path = path or heads_path()
    state = _load(path, "DISTS weights")
    size = sum(CHANNELS)
    try:
        alpha, beta = (state[k].reshape(-1).to(torch.float32) for k in ("alpha", "beta"))
    except (KeyError, TypeError, AttributeError, RuntimeError):
        raise RdkitError(f"{path}: not DISTS weights (tensors 'alpha' and 'beta' expected)") from None
    if alpha.numel() != size or beta.numel() != size:
        raise RdkitError(f"{path}: DISTS alpha and beta must have {size} entries, got {alpha.numel()}, {beta.numel()}")
    total = alpha.sum() + beta.sum()
    if not (torch.isfinite(alpha).all() and torch.isfinite(beta).all() and total > 0):
        raise RdkitError(f"{path}: DISTS alpha and beta must be finite with a positive sum")
    return alpha / total, beta / total


def _conv_shapes() -> dict[int, tuple[int, int]]:
    """``features`` index -> (out, in) channels of VGG-16's thirteen convolutions."""
    from rdkit_ae.evaluation.dists_net import CHANNELS, STAGE_CONVS

    shapes, c_in = {}, 3
    for convs, c_out in zip(STAGE_CONVS, CHANNELS[1:]):
        for idx in convs:
            shapes[idx], c_in = (c_out, c_in), c_out
    return shapes


def load_backbone(path: Path) -> list[tuple[Any, Any]]:
    """The thirteen ``(weight, bias)`` pairs of VGG-16's ``features`` from a torchvision state dict (one-line
    error for anything else, e.g. a file that stops before conv5_3)."""
    import torch

    state = _load(path, "DISTS backbone weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RdkitError(f"{path}: not a state dict of torchvision VGG-16 weights")
    out = []
    for idx, (c_out, c_in) in _conv_shapes().items():
        w, b = state.get(f"features.{idx}.weight"), state.get(f"features.{idx}.bias")
        if not (
            isinstance(w, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and w.shape == (c_out, c_in, 3, 3)
            and b.shape == (c_out,)
        ):
            raise RdkitError(
                f"{path}: features.{idx} missing or of the wrong shape: DISTS needs torchvision's VGG-16 "
                "convolutions conv1_1..conv5_3 (features.0..28)"
            )
        out.append((w.float().contiguous(), b.float().contiguous()))
    return out


def load_dists(path: str | Path | None = None):
    """A :class:`~rdkit_ae.evaluation.dists_net.DistsNet` with the shipped alpha/beta and the backbone from
    ``path`` (or as found by :func:`dists_backbone_path`); cached per file."""
    file = dists_backbone_path(path)
    key = str(file.resolve())
    if key not in _CACHE:
        from rdkit_ae.evaluation.dists_net import DistsNet

        alpha, beta = load_heads()
        _CACHE[key] = DistsNet(load_backbone(file), alpha, beta).eval()
    return _CACHE[key]


def dists_metric(original: np.ndarray, decoded: np.ndarray) -> list[float | None]:
    """DISTS per image of uint8 (N, H, W, 3) batches; None where a side is under 32 pixels."""
    import torch

    if min(original.shape[1:3]) < MIN_SIDE:
        return [None] * len(original)
    net = load_dists()

    def scaled(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0

    with torch.no_grad():
        out = net(scaled(original), scaled(decoded))
    return [float(v) for v in out.reshape(-1)]
