"""CompressAI architectures that rdkit-ae recipes reproduce layer for layer, and how their state-dict keys map.

Each :class:`Architecture` names a CompressAI zoo model, the rdkit-ae zoo
recipe with the same layers, and prefix rules between the two key layouts
(for example CompressAI's ``h_a.0.weight`` is ``latent_codec.hyper.h_a.1.weight``
in the ``hyperprior`` quantizer, whose ``h_a`` starts with an ``|y|`` module).
Sizes per quality come from CompressAI's own table (``compressai.zoo.image.cfgs``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import compressai.zoo
from compressai.zoo.image import cfgs, model_architectures, model_urls

from rdkit_ae.errors import RdkitError
from rdkit_ae.plugin.exact import is_integer_network_key

# (CompressAI prefix, rdkit-ae prefix, shift of the layer index that follows the prefix)
Rule = tuple[str, str, int]

_TRANSFORMS: tuple[Rule, ...] = (("g_a.", "g_a.net.", 0), ("g_s.", "g_s.net.", 0))

# CompressAI's training lambdas (compressai.models.vbr lists the same values), quality 1..8.
MSE_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.025, 0.0483, 0.0932, 0.18)
MS_SSIM_LAMBDAS = (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.0)
METRICS = ("mse", "ms-ssim")


@dataclass(frozen=True)
class Architecture:
    """One CompressAI architecture and its rdkit-ae counterpart."""

    name: str  # CompressAI's zoo name, e.g. "bmshj2018-hyperprior"
    recipe: str  # rdkit-ae zoo recipe with the same layers
    quantizer: str  # rdkit-ae quantizer plugin
    rules: tuple[Rule, ...]
    hyper: bool  # the quantizer has its own N (CompressAI uses the model's N)

    @property
    def compressai_class(self) -> Any:
        return model_architectures[self.name]

    @property
    def zoo_function(self) -> Callable[..., Any]:
        return getattr(compressai.zoo, self.name.replace("-", "_"))

    @property
    def qualities(self) -> list[int]:
        return sorted(cfgs[self.name])

    def sizes(self, quality: int) -> tuple[int, int]:
        """(N, M) of CompressAI's model at ``quality``."""
        if quality not in cfgs[self.name]:
            q = self.qualities
            raise RdkitError(f"{self.name}: quality must be in {q[0]}..{q[-1]}; got {quality}")
        N, M = cfgs[self.name][quality]
        return int(N), int(M)

    def pretrained_url(self, quality: int, metric: str) -> str:
        """Where CompressAI publishes its pretrained weights for ``quality`` and ``metric``."""
        url = model_urls.get(self.name, {}).get(metric, {}).get(quality)
        if url is None:
            raise RdkitError(f"CompressAI {self.name} quality {quality} ({metric}): no pretrained weights published")
        return str(url)

    @staticmethod
    def stored_sizes(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int] | None:
        """(N, M) of stored weights, read as CompressAI's ``from_state_dict`` reads them; None if absent.

        N and M are the output channels of ``g_a``'s first and last
        convolutions (4-D weights), the same in every supported architecture.
        """
        first, last = shapes.get("g_a.0.weight"), shapes.get("g_a.6.weight")
        if first is None or last is None or len(first) != 4 or len(last) != 4:
            return None
        return int(first[0]), int(last[0])

    def overrides(self, N: int, M: int) -> dict[str, Any]:
        """Recipe overrides that give this architecture's model at sizes N, M."""
        out: dict[str, Any] = {"encoder.N": N, "encoder.M": M, "encoder.stages": 4}
        if self.hyper:
            out["quantizer.N"] = N
        return out

    # -- keys --
    def to_rdkit(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A CompressAI state dict (canonical keys, as ``model.state_dict()`` gives) in rdkit-ae's layout."""
        return {_rename(k, self.rules, 0, self.name): v for k, v in state.items()}

    def to_compressai(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """An rdkit-ae ``RDModel`` state dict in CompressAI's layout."""
        # The portable path's integer networks are derived from the weights; CompressAI has no such layers.
        return {_rename(k, self.rules, 1, self.name): v for k, v in state.items() if not is_integer_network_key(k)}


def _rename(key: str, rules: tuple[Rule, ...], src: int, arch: str) -> str:
    for ca_prefix, rd_prefix, shift in rules:
        prefix, target = (ca_prefix, rd_prefix) if src == 0 else (rd_prefix, ca_prefix)
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if shift:
            index, _, tail = rest.partition(".")
            if not index.isdigit():
                break
            rest = f"{int(index) + (shift if src == 0 else -shift)}.{tail}"
        return target + rest
    side = "CompressAI" if src == 0 else "rdkit-ae"
    raise RdkitError(f"{arch}: unexpected {side} weight '{key}' (not a layer of this architecture)")


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "bmshj2018-factorized",
            "bmshj2018-factorized",
            "factorized-entropy",
            (*_TRANSFORMS, ("entropy_bottleneck.", "latent_codec.entropy_bottleneck.", 0)),
            hyper=False,
        ),
        Architecture(
            "bmshj2018-hyperprior",
            "bmshj2018-hyperprior",
            "hyperprior",
            (
                *_TRANSFORMS,
                ("entropy_bottleneck.", "latent_codec.hyper.entropy_bottleneck.", 0),
                # rdkit-ae's h_a starts with |y| (CompressAI applies torch.abs in forward).
                ("h_a.", "latent_codec.hyper.h_a.", 1),
                ("h_s.", "latent_codec.hyper.h_s.", 0),
                ("gaussian_conditional.", "latent_codec.y.gaussian_conditional.", 0),
            ),
            hyper=True,
        ),
        Architecture(
            "mbt2018-mean",
            "mbt2018-mean",
            "mean-scale-hyperprior",
            (
                *_TRANSFORMS,
                ("entropy_bottleneck.", "latent_codec.hyper.entropy_bottleneck.", 0),
                ("h_a.", "latent_codec.hyper.h_a.", 0),
                ("h_s.", "latent_codec.hyper.h_s.", 0),
                ("gaussian_conditional.", "latent_codec.y.gaussian_conditional.", 0),
            ),
            hyper=True,
        ),
    )
}

# CompressAI architectures without an rdkit-ae counterpart, and why.
UNSUPPORTED = {
    "mbt2018": "its autoregressive context model (MaskedConv2d + entropy parameters) has no rdkit-ae quantizer",
    "cheng2020-anchor": "its residual-block / sub-pixel transforms have no rdkit-ae encoder or decoder",
    "cheng2020-attn": "its attention / residual transforms have no rdkit-ae encoder or decoder",
    "bmshj2018-factorized-relu": "its ReLU (not GDN) transforms have no rdkit-ae encoder or decoder",
}


def get_architecture(name: str) -> Architecture:
    """The supported architecture called ``name``; a one-line error naming the supported ones otherwise."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    supported = ", ".join(ARCHITECTURES)
    if name in UNSUPPORTED or name.replace("_", "-") in UNSUPPORTED:
        why = UNSUPPORTED.get(name) or UNSUPPORTED[name.replace("_", "-")]
        raise RdkitError(f"CompressAI model '{name}' is not supported: {why}; supported: {supported}")
    close = difflib.get_close_matches(name, list(ARCHITECTURES), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise RdkitError(f"unknown CompressAI model '{name}'; supported: {supported}{hint}")


def rate_weight(metric: str, quality: int) -> float:
    """rdkit-ae's ``rate`` loss weight equivalent to CompressAI's lambda for ``quality``.

    CompressAI minimises ``lambda * 255**2 * MSE + bpp`` (MSE models) or
    ``lambda * (1 - MS-SSIM) + bpp``; rdkit-ae's objective is
    ``distortion + w * bpp``, so ``w = 1 / (lambda * 255**2)`` or ``1 / lambda``.
    """
    lambdas = MSE_LAMBDAS if metric == "mse" else MS_SSIM_LAMBDAS
    lam = lambdas[min(max(quality, 1), len(lambdas)) - 1]
    return float(f"{1.0 / (lam * 255**2 if metric == 'mse' else lam):.4g}")


__all__ = ["ARCHITECTURES", "UNSUPPORTED", "Architecture", "METRICS", "get_architecture", "rate_weight"]
