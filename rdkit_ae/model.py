"""RDModel: encoder -> quantizer (a CompressAI LatentCodec) -> decoder."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from compressai.models import CompressionModel
from torch import Tensor, nn

from rdkit_ae.recipe import Recipe, load_recipe
from rdkit_ae.registry import accepted_params, create, get_plugin


class RDModel(CompressionModel):
    """A CompressAI ``CompressionModel`` composed of three plugins.

    ``g_a`` (encoder) and ``g_s`` (decoder) follow CompressAI's naming;
    ``latent_codec`` is the quantizer. Inputs of any size are padded on the
    right and bottom (replicating the border) to a multiple of :attr:`stride`
    and the output is cropped back.
    """

    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: nn.Module, recipe: Recipe | None = None):
        super().__init__()
        self.g_a = encoder
        self.latent_codec = quantizer
        self.g_s = decoder
        self.recipe = recipe

    @property
    def stride(self) -> int:
        """Divisor that padded inputs must have: the encoder's stride times the codec's."""
        return int(getattr(self.g_a, "stride", 1)) * int(getattr(self.latent_codec, "stride", 1))

    def padding(self, height: int, width: int) -> tuple[int, int]:
        s = self.stride
        return (-height) % s, (-width) % s

    def _pad(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        # Same memory layout for forward and compress: float results depend on it.
        x = x.contiguous()
        ph, pw = self.padding(x.size(-2), x.size(-1))
        if ph or pw:
            # Replicate rather than zero padding: flat borders cost fewer bits.
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def forward(self, x: Tensor) -> dict[str, Any]:
        h, w = x.shape[-2:]
        y = self.g_a(self._pad(x))
        q = self.latent_codec(y)
        x_hat = self.g_s(q["y_hat"])[..., :h, :w]
        return {"x_hat": x_hat, "likelihoods": q["likelihoods"]}

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict[str, Any]:
        """Real bitstreams: ``{"strings", "shape", "size"}`` (``size`` is the unpadded H, W)."""
        h, w = x.shape[-2:]
        y = self.g_a(self._pad(x))
        out = self.latent_codec.compress(y)
        return {"strings": out["strings"], "shape": out["shape"], "size": (int(h), int(w))}

    @torch.no_grad()
    def decompress(
        self, strings: Sequence[Sequence[bytes]], shape: Any, size: tuple[int, int] | None = None
    ) -> dict[str, Tensor]:
        y_hat = self.latent_codec.decompress(strings, shape)["y_hat"]
        x_hat = self.g_s(y_hat)
        if size is not None:
            x_hat = x_hat[..., : size[0], : size[1]]
        return {"x_hat": x_hat}

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(k, h, w) of the latent for an input of the given size (after padding)."""
        ph, pw = self.padding(height, width)
        s = int(getattr(self.g_a, "stride", 1))
        return int(self.g_a.out_channels), (height + ph) // s, (width + pw) // s

    def nominal_bits(self, height: int, width: int) -> int | None:
        """For fixed-rate quantizers, h*w*k*b bits per image (the seed's eq. 4); else None."""
        bits = getattr(self.latent_codec, "bits", None)
        if bits is None:
            return None
        k, h, w = self.latent_shape(height, width)
        return k * h * w * int(bits)


def _params(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "name"}


def build_model(recipe: Recipe | str, overrides: Sequence[str] = ()) -> RDModel:
    """Build the :class:`RDModel` a recipe (or recipe name/path) describes.

    The decoder receives every encoder parameter of the same name that it
    accepts and the recipe does not set, so ``[decoder] name = "conv"`` mirrors
    the encoder; the quantizer receives ``channels`` from the encoder.
    """
    if not isinstance(recipe, Recipe) or overrides:
        recipe = load_recipe(recipe, overrides)
    enc_cfg, q_cfg, dec_cfg = recipe["encoder"], recipe["quantizer"], recipe["decoder"]
    enc_params = _params(enc_cfg)
    encoder = create("encoder", enc_cfg["name"], **enc_params)

    dec_params = _params(dec_cfg)
    accepted = accepted_params(get_plugin("decoder", dec_cfg["name"]).factory) or set()
    inherited = {k: v for k, v in enc_params.items() if k in accepted and k not in dec_params}
    decoder = create("decoder", dec_cfg["name"], **inherited, **dec_params)

    q_params = _params(q_cfg)
    q_accepted = accepted_params(get_plugin("quantizer", q_cfg["name"]).factory)
    if "channels" not in q_params and (q_accepted is None or "channels" in q_accepted):
        q_params["channels"] = int(encoder.out_channels)
    quantizer = create("quantizer", q_cfg["name"], **q_params)
    return RDModel(encoder, quantizer, decoder, recipe)


class Objective(nn.Module):
    """The weighted sum of a recipe's losses: ``total, terms = objective(x, out)``."""

    def __init__(self, entries: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [self._unique(name, i, entries) for i, (name, _, _) in enumerate(entries)]
        self.weights = [float(w) for _, w, _ in entries]
        self.terms = nn.ModuleList([m for _, _, m in entries])

    @staticmethod
    def _unique(name: str, i: int, entries: Sequence[tuple[str, float, nn.Module]]) -> str:
        return name if sum(n == name for n, _, _ in entries) == 1 else f"{name}#{i}"

    def forward(self, x: Tensor, out: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        values = {name: term(x, out) for name, term in zip(self.names, self.terms)}
        total = sum(w * v for w, v in zip(self.weights, values.values()))
        return total, values


def build_objective(recipe: Recipe | str) -> Objective:
    """Instantiate the recipe's ``[[loss]]`` entries as one weighted :class:`Objective`."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    entries = []
    for entry in recipe.losses:
        params = {k: v for k, v in entry.items() if k not in ("name", "weight")}
        entries.append((entry["name"], entry["weight"], create("loss", entry["name"], **params)))
    return Objective(entries)
