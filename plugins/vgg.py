"""Frozen VGG-16 feature extractor for the ``vgg-perceptual`` loss, and its weights.

Weights, in order of precedence:

1. the loss's ``weights`` parameter (a path to a local file, or the word
   ``"torchvision"`` to force torchvision's download);
2. the environment variable ``RDKIT_VGG_WEIGHTS`` (a path);
3. torchvision's ``VGG16_Weights.IMAGENET1K_V1`` (torch hub cache, downloaded
   where there is internet).

Preprocessing convention, in order of precedence: the ``preprocessing``
parameter, ``RDKIT_VGG_PREPROCESSING``, else ``"torchvision"``:

- ``"torchvision"``: RGB, ImageNet mean [0.485, 0.456, 0.406] and std
  [0.229, 0.224, 0.225] on [0, 1] values (torchvision's weights);
- ``"caffe"``: BGR order, values x 255 minus the mean [103.939, 116.779,
  123.68] (B, G, R), no std (the original Oxford / Caffe VGG-16 release).

A local weights file is a ``dict[str, Tensor]`` in torchvision's layout
(``features.0.weight``, ...); a full ``vgg16()`` state dict (classifier keys
are ignored) and keys without the ``features.`` prefix are accepted too. It is
loaded with ``torch.load(..., weights_only=True)``, strictly for the layers the
loss needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any, ContextManager, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from rdkit_ae.errors import PluginError, RdkitError

ENV_WEIGHTS = "RDKIT_VGG_WEIGHTS"
ENV_PREPROCESSING = "RDKIT_VGG_PREPROCESSING"
TORCHVISION = "torchvision"
PREPROCESSINGS = ("torchvision", "caffe")
PRECISIONS = ("fp32", "bf16", "auto")

#: ReLU layer name -> index in ``torchvision.models.vgg16().features``.
LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3,
    "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22,
    "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}  # fmt: skip

# VGG-16 ("configuration D"): conv widths, "M" = 2x2 max pooling.
_CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

_FIX_HINT = (
    f"set {ENV_WEIGHTS}=/path/to/vgg16.pth (and {ENV_PREPROCESSING}=caffe|torchvision), "
    "or set `weights` / `preprocessing` on the recipe's vgg-perceptual loss entry, "
    "or connect to the internet"
)


class VGGWeightsError(RdkitError):
    """VGG-16 weights that cannot be found, downloaded or loaded."""


# -- names and conventions ----------------------------------------------------
def layer_index(name: str) -> int:
    if not isinstance(name, str) or name not in LAYERS:
        raise PluginError(f"loss 'vgg-perceptual': unknown VGG-16 layer {name!r}; known layers: {', '.join(LAYERS)}")
    return LAYERS[name]


def resolve_preprocessing(preprocessing: str | None = None) -> str:
    """The preprocessing convention: parameter, else $RDKIT_VGG_PREPROCESSING, else 'torchvision'."""
    source = "parameter preprocessing"
    value = preprocessing
    if value is None:
        value = os.environ.get(ENV_PREPROCESSING) or None
        source = f"${ENV_PREPROCESSING}"
    if value is None:
        return "torchvision"
    if not isinstance(value, str) or value.strip().lower() not in PREPROCESSINGS:
        raise PluginError(f"loss 'vgg-perceptual': {source} must be 'torchvision' or 'caffe'; got {value!r}")
    return value.strip().lower()


def resolve_weights(weights: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """(path or None for torchvision's download, description of where it came from)."""
    if weights is not None:
        if str(weights).strip().lower() == TORCHVISION:
            return None, "torchvision IMAGENET1K_V1"
        return _expand(weights), "parameter weights"
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        return _expand(env), f"${ENV_WEIGHTS}"
    return None, "torchvision IMAGENET1K_V1"


def _expand(path: str | os.PathLike) -> str:
    return str(Path(os.path.expandvars(os.path.expanduser(str(path)))).resolve())


def preprocess(x: Tensor, convention: str) -> Tensor:
    """[0, 1] RGB images -> the network's input convention."""
    if convention == "caffe":
        mean = x.new_tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
        return x.flip(1) * 255.0 - mean
    mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


# -- precision ------------------------------------------------------------------
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which it has no bf16 dot-product instructions.
_NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products natively (not emulated, where bf16 is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    if isa in _NO_BF16_ISAS:
        return False
    cpu = torch.cpu
    if hasattr(cpu, "_is_avx512_bf16_supported") and torch.backends.cpu.get_cpu_capability().startswith("AVX"):
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # e.g. Arm with BF16


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "fp32" or "bf16" for ``device``: "auto" is bf16 where the hardware has native bf16."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    """bf16 autocast on ``device`` for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def features(net: nn.Sequential, x: Tensor, indices: Sequence[int], convention: str) -> list[Tensor]:
    """Activations of ``net`` at ``indices`` (in that order) for [0, 1] images ``x``, channels-last."""
    h = preprocess(x.float(), convention).contiguous(memory_format=torch.channels_last)
    wanted = set(indices)
    feats: dict[int, Tensor] = {}
    for i, layer in enumerate(net):
        h = layer(h)
        if i in wanted:
            feats[i] = h
    return [feats[i] for i in indices]


def layer_weight_values(plugin: str, layers: Sequence[str], layer_weights: Any) -> list:
    """A VGG loss's ``layer_weights`` (None, a list, or a table by layer name) as one raw value per layer, in
    ``layers`` order; each loss converts and bounds the values its own way."""
    if layer_weights is None:
        return [1.0 for _ in layers]
    if isinstance(layer_weights, Mapping):
        unknown = [k for k in layer_weights if k not in layers]
        if unknown:
            raise PluginError(f"{plugin}: layer_weights names layers not in layers: {unknown}")
        return [layer_weights.get(n, 1.0) for n in layers]
    if isinstance(layer_weights, Sequence) and not isinstance(layer_weights, str):
        if len(layer_weights) != len(layers):
            raise PluginError(f"{plugin}: layer_weights has {len(layer_weights)} values for {len(layers)} layers")
        return list(layer_weights)
    raise PluginError(f"{plugin}: layer_weights must be a list or a table by layer; got {layer_weights!r}")


# -- the network --------------------------------------------------------------
def build_features(depth: int) -> nn.Sequential:
    """``vgg16().features[: depth + 1]`` (same indices), without building the classifier."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _CFG_D:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(v)
        if len(layers) > depth:
            break
    return nn.Sequential(*layers[: depth + 1])


def _conv_names(depth: int) -> dict[int, str]:
    """features index -> conv name (conv1_1 ...) for the convs up to ``depth``."""
    names, block, n = {}, 1, 0
    idx = 0
    for v in _CFG_D:
        if v == "M":
            block, n = block + 1, 0
            idx += 1
        else:
            n += 1
            if idx <= depth:
                names[idx] = f"conv{block}_{n}"
            idx += 2
    return names


_FEATURE_KEY = re.compile(r"^(?:features\.)?(\d+)\.(weight|bias)$")


def _features_state(state: Mapping, where: str) -> dict[str, Tensor]:
    """Normalise a state dict to ``{"<index>.weight": Tensor, ...}`` for the feature layers."""
    if not isinstance(state, Mapping):
        raise VGGWeightsError(f"VGG weights file {where}: expected a dict of tensors, got {type(state).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise VGGWeightsError(f"VGG weights file {where}: expected a dict of tensors with string keys")
        m = _FEATURE_KEY.match(key)
        if m is None:
            continue  # classifier.* and anything else is not needed
        if not isinstance(value, Tensor):
            raise VGGWeightsError(f"VGG weights file {where}: {key} is a {type(value).__name__}, not a tensor")
        out[f"{m.group(1)}.{m.group(2)}"] = value
    if not out:
        raise VGGWeightsError(
            f"VGG weights file {where} holds no VGG-16 feature weights (expected keys like 'features.0.weight')"
        )
    return out


def _load_file(path: str) -> dict[str, Tensor]:
    where = f"'{path}'"
    if not os.path.exists(path):
        raise VGGWeightsError(f"VGG weights file not found: '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, directories ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise VGGWeightsError(f"cannot read VGG weights file '{path}': {type(exc).__name__}: {msg}"[:400]) from None
    return _features_state(state, where)


def _download_torchvision() -> dict[str, Tensor]:
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    try:
        # torch.hub's cache ($TORCH_HOME/hub/checkpoints); downloads on a miss.
        state = torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise VGGWeightsError(
            f"cannot get torchvision's VGG-16 weights ({type(exc).__name__}: {reason}); {_FIX_HINT}"
        ) from None
    return _features_state(state, f"'{url}'")


def _load_into(net: nn.Sequential, state: dict[str, Tensor], depth: int, where: str, layer: str) -> None:
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        convs = _conv_names(depth)
        names = sorted({convs.get(int(k.split(".")[0]), k) for k in missing}, key=lambda n: (len(n), n))
        have = sorted({int(k.split(".")[0]) for k in state})
        covers = f"; it stops at features.{have[-1]} ({_conv_names(have[-1]).get(have[-1], '?')})" if have else ""
        raise VGGWeightsError(
            f"VGG weights {where} lack {', '.join(names)}, needed for layer {layer}{covers}; "
            "choose shallower layers or a complete VGG-16 file"
        )
    for k, v in wanted.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise VGGWeightsError(
                f"VGG weights {where}: features.{k} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(v.shape)} (not a VGG-16 file?)"
            )
    net.load_state_dict({k: state[k].float() for k in wanted}, strict=True)


_CACHE: dict[tuple, nn.Sequential] = {}
_LOCK = threading.Lock()


def _source_key(path: str | None) -> tuple:
    if path is None:
        return ("torchvision", "IMAGENET1K_V1")
    try:
        st = os.stat(path)
        return (path, st.st_mtime_ns, st.st_size)
    except OSError:
        return (path, None, None)


def load_features(
    depth: int,
    weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    layer: str | None = None,
) -> nn.Sequential:
    """A frozen, eval-mode ``vgg16().features[: depth + 1]`` with pretrained weights on ``device``.

    Cached in-process per (weights source, depth, device); the returned module
    is shared, so never train or modify it.
    """
    path, where = resolve_weights(weights)
    device = torch.device(device)
    key = (_source_key(path), depth, str(device))
    with _LOCK:
        net = _CACHE.get(key)
        if net is not None:
            return net
        cpu_key = (key[0], depth, "cpu")
        net = _CACHE.get(cpu_key)
        if net is None:
            state = _download_torchvision() if path is None else _load_file(path)
            label = f"'{path}' (from {where})" if path is not None else "from torchvision"
            layer = layer or next((n for n, i in LAYERS.items() if i == depth), f"features.{depth}")
            net = build_features(depth)
            _load_into(net, state, depth, label, layer)
            net.requires_grad_(False)
            net.eval()
            net = net.to(memory_format=torch.channels_last)
            _CACHE[cpu_key] = net
        if device.type != "cpu":
            import copy

            net = copy.deepcopy(net).to(device).eval()
            net.requires_grad_(False)
            _CACHE[key] = net
        return net


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


__all__ = [
    "LAYERS",
    "ENV_WEIGHTS",
    "PRECISIONS",
    "autocast",
    "features",
    "native_bf16",
    "resolve_precision",
    "ENV_PREPROCESSING",
    "VGGWeightsError",
    "build_features",
    "clear_cache",
    "layer_index",
    "load_features",
    "preprocess",
    "resolve_preprocessing",
    "resolve_weights",
]
