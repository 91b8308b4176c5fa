"""Export rdkit-ae models whose layers are a CompressAI architecture as CompressAI checkpoints.

The output is a plain state dict in CompressAI's key layout (what its zoo
files hold), written only after CompressAI's own ``from_state_dict`` has
loaded it, so ``python -m compressai.utils.eval_model checkpoint OUT -a ARCH``
and ``model_architectures[ARCH].from_state_dict(torch.load(OUT))`` read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rdkit_ae.checkpoint import load_model
from rdkit_ae.errors import RdkitError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.interop.architectures import ARCHITECTURES, Architecture
from rdkit_ae.plugins.decoders import GDNDecoder
from rdkit_ae.plugins.encoders import GDNEncoder
from rdkit_ae.plugins.entropy_coded import FactorizedEntropyQuantizer, HyperpriorQuantizer
from rdkit_ae.plugins.meanscale import MeanScaleHyperpriorQuantizer
from rdkit_ae.text import one_line

_BY_QUANTIZER = {
    FactorizedEntropyQuantizer: "bmshj2018-factorized",
    HyperpriorQuantizer: "bmshj2018-hyperprior",
    MeanScaleHyperpriorQuantizer: "mbt2018-mean",
}
_STAGES = 4  # CompressAI's GDN transforms have 4 stride-2 steps (stride 16)
_HYPER_STAGES = 2


def compressai_architecture(model: Any) -> Architecture:
    """The CompressAI architecture an ``RDModel`` is layer for layer; a one-line error saying why otherwise."""
    enc, dec, q = model.g_a, model.g_s, model.latent_codec
    arch_name = _BY_QUANTIZER.get(type(q))
    if arch_name is None:
        names = ", ".join(ARCHITECTURES)
        raise RdkitError(
            f"CompressAI has no architecture with quantizer {type(q).__name__}; "
            f"exportable: {names} (factorized-entropy, hyperprior, mean-scale-hyperprior quantizers)"
        )
    if type(enc) is not GDNEncoder or type(dec) is not GDNDecoder:
        raise RdkitError(f"{arch_name} needs the 'gdn' encoder and decoder; this model has other transforms")
    if enc.stride != 2**_STAGES or dec.stride != 2**_STAGES:
        raise RdkitError(f"{arch_name} has {_STAGES} GDN stages; this model has {enc.stride.bit_length() - 1}")
    if (enc.N, enc.M) != (dec.N, dec.M):
        raise RdkitError(f"{arch_name} mirrors its encoder: this decoder has other sizes than the encoder")
    if arch_name != "bmshj2018-factorized":
        if q.hyper_stages != _HYPER_STAGES:
            raise RdkitError(f"{arch_name} has {_HYPER_STAGES} hyper stages; this model has {q.hyper_stages}")
        if q.N != enc.N:
            raise RdkitError(
                f"{arch_name} uses one N for its transforms and hyperprior; this model has encoder N={enc.N}, "
                f"quantizer N={q.N}"
            )
    return ARCHITECTURES[arch_name]


def to_compressai(model: Any) -> tuple[Architecture, Any]:
    """``(architecture, CompressAI model)`` holding ``model``'s weights and entropy tables."""
    arch = compressai_architecture(model)
    state = arch.to_compressai(model.state_dict())
    try:
        ca_model = arch.compressai_class.from_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a mismatch here is a bug in the key rules; say so in one line
        msg = one_line(exc, 240)
        raise RdkitError(f"CompressAI's {arch.name} does not accept the converted weights ({msg})") from None
    return arch, ca_model.eval()


def export_compressai(source: str | Path | Any, output: str | Path) -> tuple[Architecture, Any]:
    """Write a CompressAI checkpoint (plain state dict) of an rdkit-ae checkpoint path or ``RDModel``.

    Returns ``(architecture, CompressAI model)``; the file is written
    atomically, and only once CompressAI has loaded the weights.
    """
    if isinstance(source, (str, Path)) and Path(source).resolve() == Path(output).resolve():
        raise RdkitError(f"refusing to overwrite the input checkpoint {source}; choose another -o")
    model = load_model(source)[0] if isinstance(source, (str, Path)) else source
    arch, ca_model = to_compressai(model)
    state = {k: v.detach().to("cpu").clone() for k, v in ca_model.state_dict().items()}
    atomic_write_bytes(output, lambda f: torch.save(state, f))
    return arch, ca_model


__all__ = ["compressai_architecture", "export_compressai", "to_compressai"]
