"""RDModel: encoder -> quantizer (a CompressAI LatentCodec) -> decoder."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from compressai.models import CompressionModel
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode

from rdkit_ae.errors import FormatError, PluginError, RdkitError, RecipeError
from rdkit_ae.limits import env_limit
from rdkit_ae.plugin.tables import update_entropy_models
from rdkit_ae.recipe import Recipe, load_recipe
from rdkit_ae.registry import accepted_params, create, get_plugin
from rdkit_ae.text import one_line

MAX_PARAMS_ENV = "RDKIT_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 200_000_000  # ~800 MB of float32 weights; published codecs have well under 100M
MAX_STRIDE = 1 << 10  # inputs are padded to a multiple of the stride: 1024 pads a 1x1 image to 12 MB


class RDModel(CompressionModel):
    """A CompressAI ``CompressionModel`` composed of three plugins.

    ``g_a`` (encoder) and ``g_s`` (decoder) follow CompressAI's naming;
    ``latent_codec`` is the quantizer. Inputs of any size are padded on the
    right and bottom (replicating the border) to a multiple of :attr:`stride`
    and the output is cropped back. :meth:`decompress` clamps to [0, 1], as
    CompressAI's models do; :meth:`forward` does not (training needs the
    gradient outside [0, 1]).
    """

    # Plugins: any nn.Module with the documented attributes (stride, out_channels, compress, ...).
    g_a: Any
    latent_codec: Any
    g_s: Any

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
        out = {"x_hat": x_hat, "likelihoods": q["likelihoods"]}
        if "lmbda" in q:  # a variable-rate quantizer's per-image lambda, for the "rd" loss
            out["lmbda"] = q["lmbda"]
        return out

    @property
    def variable_rate(self) -> bool:
        """Whether the quantizer has several operating points (``set_rate``), as ``gain`` does."""
        return callable(getattr(self.latent_codec, "set_rate", None))

    @property
    def rate(self) -> float | None:
        """The current rate position of a variable-rate model (what ``set_rate`` returned); None for a fixed rate."""
        rate = getattr(self.latent_codec, "rate", None) if self.variable_rate else None
        return None if rate is None else float(rate)

    def set_rate(self, lmbda: float | None = None, index: float | None = None) -> float:
        """Operating point of a variable-rate model, by ``lmbda`` or rate ``index``; returns the rate position."""
        if not self.variable_rate:
            raise RdkitError("this model has a single rate: a lambda or rate index needs a variable-rate model")
        return float(self.latent_codec.set_rate(lmbda=lmbda, index=index))

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the entropy coders' CDF tables and the integer networks of the portable entropy path.

        ``CompressionModel.update`` plus :func:`rdkit_ae.plugin.update_entropy_models`'s
        conversion, so every quantizer built on the plugin bases is portable
        once updated. ``update_quantiles`` is accepted for CompressAI's signature.
        """
        return update_entropy_models(self, scale_table, force)

    def aux_loss(self) -> Tensor:
        """The quantizer's own ``aux_loss()`` when it has one, else CompressAI's sum over EntropyBottlenecks."""
        own = getattr(self.latent_codec, "aux_loss", None)
        if callable(own):
            return own()
        return super().aux_loss()

    def plugin_name(self, part: str) -> str:
        """``quantizer 'gain'``: a part (encoder, quantizer, decoder) as its recipe names it, for error messages."""
        table = self.recipe[part] if self.recipe is not None and part in self.recipe.data else None
        name = table.get("name") if isinstance(table, dict) else None
        module = {"encoder": self.g_a, "quantizer": self.latent_codec, "decoder": self.g_s}[part]
        return f"{part} '{name or type(module).__name__}'"

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
        y_hat = self._stage("quantizer", lambda: self.latent_codec.decompress(strings, shape)["y_hat"])
        x_hat = self._stage("decoder", lambda: self.g_s(y_hat))
        if size is not None:
            x_hat = x_hat[..., : size[0], : size[1]]
        return {"x_hat": x_hat.clamp(0, 1)}

    def _stage(self, part: str, run):
        """Run one decoding stage; an exception from plugin code names the plugin (a bad file raises FormatError)."""
        try:
            return run()
        except (FormatError, RdkitError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a third-party plugin raises, say whose it is
            raise PluginError(
                f"{self.plugin_name(part)} failed in decompress ({type(exc).__name__}: {one_line(exc, 200)}): "
                "a bug in the plugin, or a file it cannot handle"
            ) from exc

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


def build_model(recipe: Recipe | str, overrides: Sequence[str] = (), *, max_params: int | None = None) -> RDModel:
    """Build the :class:`RDModel` a recipe (or recipe name/path) describes.

    The decoder receives every encoder parameter of the same name that it
    accepts and the recipe does not set, so ``[decoder] name = "conv"`` mirrors
    the encoder; the quantizer receives ``channels`` from the encoder.

    Before any weight is allocated the model is planned on fake tensors
    (:func:`plan_model`): one that does not fit together, or holds more than
    ``max_params`` parameters (default :func:`param_limit`), is refused with a
    :class:`RecipeError`.
    """
    if not isinstance(recipe, Recipe) or overrides:
        recipe = load_recipe(recipe, overrides)
    plan_model(recipe, max_params)
    return assemble_model(recipe)


def assemble_model(recipe: Recipe) -> RDModel:
    """Build a recipe's model as it stands, without :func:`plan_model`'s checks (for callers that planned it)."""
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


def param_limit() -> int:
    """Most parameters a model may have: ``$RDKIT_MAX_PARAMS`` or 200 million."""
    return env_limit(MAX_PARAMS_ENV, DEFAULT_MAX_PARAMS, "parameters", RecipeError)


def plan_model(recipe: Recipe, max_params: int | None = None) -> dict[str, tuple[int, ...]] | None:
    """Check a recipe's model without allocating it; return its parameter shapes.

    The model is built on fake tensors (meta storage: no memory, no random
    numbers drawn) and its encoder and decoder are run on a fake image, so a
    crafted recipe with a billion parameters, or a decoder that does not fit
    the encoder, is refused in milliseconds. (``torch.device("meta")`` alone
    cannot build CompressAI modules: they create CPU tensors with the legacy
    ``torch.Tensor`` constructor.) Returns None for a plugin that cannot be
    built on fake tensors; the real build then reports its own errors.
    """
    limit = param_limit() if max_params is None else int(max_params)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = assemble_model(recipe)
    except RdkitError:
        raise
    except Exception:  # noqa: BLE001 - a third-party plugin that needs real tensors: nothing to plan
        return None
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > limit:
        raise RecipeError(
            f"{recipe.source}: the model would have {count:,} parameters, more than the limit of {limit:,} "
            f"(set {MAX_PARAMS_ENV} to allow more)"
        )
    if model.stride > MAX_STRIDE:
        raise RecipeError(
            f"{recipe.source}: the model's total stride {model.stride} exceeds {MAX_STRIDE} "
            "(fewer encoder stages or hyper_stages)"
        )
    _check_fit(model, recipe)
    return shapes


def _check_fit(model: RDModel, recipe: Recipe) -> None:
    """Refuse a decoder that does not invert the encoder's shape (it would fail at the first training step)."""
    enc, dec = recipe["encoder"]["name"], recipe["decoder"]["name"]
    what = f"{recipe.source}: decoder '{dec}' does not fit encoder '{enc}'"
    pairs = [("out_channels", "in_channels", "latent channels"), ("stride", "stride", "stride")]
    for enc_attr, dec_attr, label in pairs:
        a, b = getattr(model.g_a, enc_attr, None), getattr(model.g_s, dec_attr, None)
        if isinstance(a, int) and isinstance(b, int) and a != b:
            raise RecipeError(f"{what}: {label} {a} (encoder) vs {b} (decoder)")
    q_channels = getattr(model.latent_codec, "channels", None)
    k = getattr(model.g_a, "out_channels", None)
    if isinstance(q_channels, int) and isinstance(k, int) and q_channels != k:
        raise RecipeError(f"{recipe.source}: quantizer channels {q_channels} do not match the encoder's {k} latents")
    s = model.stride
    model.eval()  # batch norm on a 1x1 batch would refuse to run in training mode
    try:
        with torch.no_grad():
            x_hat = model.g_s(model.g_a(torch.zeros(1, 3, s, s)))
    except Exception as exc:  # noqa: BLE001 - any shape error is the recipe's
        raise RecipeError(f"{what}: {one_line(exc, 200)}") from None
    if tuple(x_hat.shape) != (1, 3, s, s):
        raise RecipeError(f"{what}: a 3x{s}x{s} image comes back as {'x'.join(map(str, x_hat.shape[1:]))}")


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
