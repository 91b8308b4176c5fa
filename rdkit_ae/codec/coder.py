"""Compress images to ``.rdk`` bytes with a loaded model, and back (the API under ``rdkit compress``).

Determinism (see docs/format.md): every model computation here runs with
:data:`CODEC_THREADS` intra-op threads, whatever the caller's setting, because
oneDNN convolutions round differently at different thread counts; images are
coded one at a time because batched and single convolutions differ too.

Safety: CompressAI's rANS coder (C++) does no bounds checking. Before a model
codes anything, :func:`guard_entropy_coders` wraps its coders so that encoding
refuses latents that would overflow the coder's output buffer (or hang it on
NaN), and decoding hands the coder a zero-padded copy of each string, long
enough that a corrupt string cannot make it read past its buffer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rdkit_ae.codec import container
from rdkit_ae.errors import CheckpointError, DataError, FormatError, RdkitError

CODEC_THREADS = 1
MAX_FILE_BYTES = 1 << 30  # an .rdk larger than this is refused before it is read
_ID_DOMAIN = b"rdkit-ae model id v1\0"


class ModelMismatchError(FormatError):
    """An ``.rdk`` file made by another model than the one decoding it."""

    def __init__(self, file_id: bytes, model_id: bytes, checkpoint: str = "the checkpoint", source: str = ""):
        self.file_id, self.model_id = bytes(file_id), bytes(model_id)
        super().__init__(
            f"{source + ': ' if source else ''}made by model {container.format_id(file_id)}, but {checkpoint} is model "
            f"{container.format_id(model_id)}; decode it with the checkpoint that compressed it"
        )


# -- determinism ---------------------------------------------------------------
@contextlib.contextmanager
def fixed_threads(n: int = CODEC_THREADS) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (and no autograd)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _evaluating(model) -> Iterator[None]:
    """Eval mode inside the block (coding in training mode would use batch statistics), restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# -- model identity ------------------------------------------------------------
def model_id(model, recipe=None) -> bytes:
    """A 4-byte id: SHA-256 of the model-defining recipe sections and every tensor of the state dict.

    Only ``[encoder]``, ``[quantizer]`` and ``[decoder]`` count (training
    settings do not change what a file decodes to); the state dict includes
    the entropy coder's CDF tables, so two models that would code differently
    get different ids.
    """
    import torch

    recipe = recipe if recipe is not None else getattr(model, "recipe", None)
    h = hashlib.sha256(_ID_DOMAIN)
    if recipe is not None:
        sections = {k: recipe.data.get(k) for k in ("encoder", "quantizer", "decoder")}
        h.update(json.dumps(sections, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\0")
    for key, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[: container.ID_BYTES]


# -- checks on a loaded model ----------------------------------------------------
def check_model(model, where: str = "model") -> None:
    """Refuse a model whose entropy tables or weights would make the C++ coder misbehave.

    A checkpoint is untrusted input: CompressAI's coder indexes its CDF tables
    without bounds checks and divides by symbol frequencies, so the tables must
    be well formed (first 0, last 2**16, strictly increasing, one row per
    channel or scale) before any coding.
    """
    import torch
    from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional

    for name, p in model.state_dict().items():
        if isinstance(p, torch.Tensor) and p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise CheckpointError(f"{where}: tensor '{name}' holds NaN or infinite values")
    for name, m in model.named_modules():
        if not isinstance(m, EntropyModel):
            continue
        label = f"{where}: entropy model '{name}'"
        cdf, lengths, offsets = m._quantized_cdf, m._cdf_length, m._offset
        if cdf.numel() == 0:
            raise CheckpointError(f"{label} has no CDF tables (run model.update() before saving)")
        if (
            cdf.dim() != 2
            or lengths.dim() != 1
            or offsets.dim() != 1
            or not (cdf.size(0) == lengths.numel() == offsets.numel())
        ):
            raise CheckpointError(
                f"{label}: CDF tables of inconsistent shapes {tuple(cdf.shape)}, {tuple(lengths.shape)}, {tuple(offsets.shape)}"
            )
        rows, cols = cdf.shape
        lengths64, cdf64 = lengths.to(torch.int64), cdf.to(torch.int64)
        if bool(((lengths64 < 3) | (lengths64 > cols)).any()):
            raise CheckpointError(f"{label}: CDF lengths outside 3..{cols}")
        if bool((offsets.to(torch.int64).abs() > (1 << 24)).any()):
            raise CheckpointError(f"{label}: CDF offsets out of range")
        precision = 1 << int(getattr(m, "entropy_coder_precision", 16))
        col = torch.arange(cols)
        inside = col[None, :] < lengths64[:, None]
        last = cdf64.gather(1, (lengths64 - 1)[:, None]).squeeze(1)
        steps = cdf64[:, 1:] - cdf64[:, :-1]
        if (
            bool((cdf64[:, 0] != 0).any())
            or bool((last != precision).any())
            or bool(((steps <= 0) & inside[:, 1:]).any())
        ):
            raise CheckpointError(f"{label}: CDF tables are not valid (must rise strictly from 0 to {precision})")
        if isinstance(m, EntropyBottleneck) and rows != m.quantiles.size(0):
            raise CheckpointError(f"{label}: {rows} CDF rows for {m.quantiles.size(0)} channels")
        if isinstance(m, GaussianConditional):
            table = m.scale_table
            if table.dim() != 1 or table.numel() != rows or not bool((table > 0).all()):
                raise CheckpointError(f"{label}: scale table does not match its {rows} CDF rows")


# -- guarded entropy coder -------------------------------------------------------
class _GuardedCoder:
    """Wraps CompressAI's ``_EntropyCoder``: refuses what would crash or hang it, pads what it reads."""

    def __init__(self, inner):
        self.inner = inner
        self.name = getattr(inner, "name", "ans")

    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_lengths, offsets):
        _check_encodable(symbols, indexes, cdf_lengths, offsets)
        return self.inner.encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_lengths, offsets):
        string = bytes(string)
        # CompressAI's rANS output is whole 32-bit words, at least the 2-word final state.
        if len(string) < 8 or len(string) % 4:
            raise FormatError(
                f"corrupt data: an entropy-coded stream of {len(string)} bytes (expected a multiple of 4, at least 8)"
            )
        return self.inner.decode_with_indexes(
            string + bytes(_pad_bytes(len(indexes), len(string))), indexes, cdfs, cdf_lengths, offsets
        )

    def __getattr__(self, name: str) -> Any:  # _encoder, _decoder, ...
        return getattr(self.inner, name)


def _pad_bytes(n_symbols: int, n_bytes: int) -> int:
    """Zero bytes appended to a string before decoding so that a corrupt one cannot be over-read.

    The decoder reads one 32-bit word per symbol at most once the real data
    is exhausted (its state then keeps zero low bits), plus escape ("bypass")
    reads that the data's own bits can request: at most about 15 words per
    word of data. Valid strings read none of the padding.
    """
    return 4 * (2 * n_symbols + 16 * (n_bytes // 4) + 1024)


def _check_encodable(symbols, indexes, cdf_lengths, offsets) -> None:
    """Refuse symbols that would hang the rANS encoder or overflow its output buffer.

    The encoder writes into a buffer of one 32-bit word per symbol: each
    symbol costs at most 16 bits, plus 4 bits per escape nibble when out of
    its table's range, plus 64 bits of final state; a NaN latent becomes
    INT_MIN, whose escape loop never ends.
    """
    n = len(symbols)
    sym = np.asarray(symbols, dtype=np.int64)
    idx = np.asarray(indexes, dtype=np.int64)
    lengths = np.asarray(cdf_lengths, dtype=np.int64)
    offs = np.asarray(offsets, dtype=np.int64)
    if idx.shape != sym.shape or (n and (idx.min() < 0 or idx.max() >= len(lengths))):
        raise RdkitError("internal error: entropy coder indexes out of range")
    value = sym - offs[idx]
    max_value = lengths[idx] - 2
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - max_value))
    escape = (value < 0) | (value >= max_value)
    if bool((escape & (raw >= (1 << 30))).any()):
        raise RdkitError(
            "the latent holds NaN, infinite or huge values that the entropy coder cannot code (is the model trained and finite?)"
        )
    r = raw[escape]
    nibbles = np.zeros_like(r)
    while r.size and bool((r > 0).any()):
        nibbles += r > 0
        r = r >> 4
    bits = 16 * n + int((4 * (nibbles + nibbles // 15 + 1)).sum()) + 64 + 32
    if bits > 32 * n:
        raise RdkitError(
            f"the latent needs up to {bits} bits for {n} symbols, more than the entropy coder's buffer "
            f"({32 * n} bits); its values are far outside the trained range"
        )


def guard_entropy_coders(model) -> None:
    """Wrap every CompressAI entropy coder of ``model`` (idempotent; see the module docstring)."""
    from compressai.entropy_models import EntropyModel

    for m in model.modules():
        if isinstance(m, EntropyModel) and not isinstance(m.entropy_coder, _GuardedCoder):
            m.entropy_coder = _GuardedCoder(m.entropy_coder)


# -- latent layout -------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """What a model's quantizer produces for an image of a given size: latent ``shape`` and stream count."""

    shape: Any
    streams: int


def _plain(shape: Any) -> Any:
    if isinstance(shape, dict):
        return {k: _plain(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)):
        return tuple(int(v) for v in shape)
    return shape


def latent_layout(model, height: int, width: int) -> Layout:
    """Derive the quantizer's ``shape`` and stream count from the image size (nothing is stored in the file).

    Built-in quantizers follow from the encoder's stride (and, for the
    hyperprior, its own stride); another quantizer is asked by compressing a
    zero latent of the right size once.
    """
    import torch

    from rdkit_ae.plugins.quantizers import FactorizedEntropyQuantizer, HyperpriorQuantizer, UniformQuantizer

    k, h, w = model.latent_shape(height, width)
    q = model.latent_codec
    if isinstance(q, (UniformQuantizer, FactorizedEntropyQuantizer)):
        return Layout((h, w), 1)
    if isinstance(q, HyperpriorQuantizer):
        return Layout({"y": (h, w), "hyper": (h // q.stride, w // q.stride)}, 2)
    guard_entropy_coders(model)
    with fixed_threads():
        probe = q.compress(torch.zeros(1, k, h, w, device=_device(model)))
    return Layout(_plain(probe["shape"]), len(probe["strings"]))


def _device(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else "cpu"


# -- arrays <-> bytes --------------------------------------------------------------
def _check_image(image: np.ndarray, max_pixels: int) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"expected a uint8 image of shape (H, W, 3), got {got}")
    height, width = image.shape[:2]
    try:
        container._check_size(height, width, max_pixels)
    except FormatError as exc:
        raise DataError(str(exc)) from None
    return height, width


def _as_input(image: np.ndarray, model):
    from rdkit_ae.data.sources import to_tensor

    # Contiguous (not channels-last): the decoder sees contiguous latents, and
    # convolutions in another memory format round differently.
    if not image.flags.writeable:  # torch warns on read-only arrays (Pillow gives them)
        image = image.copy()
    return to_tensor(image).to(_device(model)).contiguous()


def compress_array(
    model, image: np.ndarray, *, mid: bytes | None = None, max_pixels: int = container.MAX_PIXELS
) -> bytes:
    """Compress one uint8 (H, W, 3) image to ``.rdk`` bytes (entropy models must be updated; coded in eval mode)."""
    height, width = _check_image(image, max_pixels)
    guard_entropy_coders(model)
    mid = model_id(model) if mid is None else mid
    layout = latent_layout(model, height, width)
    with _evaluating(model), fixed_threads():
        out = model.compress(_as_input(image, model))
    if len(out["strings"]) != layout.streams or _plain(out["shape"]) != layout.shape:
        raise RdkitError(
            f"the quantizer produced shape {out['shape']!r} in {len(out['strings'])} streams, but "
            f"{layout.shape!r} in {layout.streams} was derived; .rdk cannot store this quantizer"
        )
    return container.pack(mid, out, 0, max_pixels=max_pixels)


def decompress_bytes(
    model, data: bytes, *, mid: bytes | None = None, max_pixels: int = container.MAX_PIXELS
) -> np.ndarray:
    """Decode ``.rdk`` bytes to a uint8 (H, W, 3) image; any defect raises :class:`FormatError`."""
    import torch

    from rdkit_ae.data.sources import to_uint8

    packed = container.unpack(data, max_pixels=max_pixels)
    mid = model_id(model) if mid is None else mid
    if packed.model_id != mid:
        raise ModelMismatchError(packed.model_id, mid)
    height, width = packed.size
    layout = latent_layout(model, height, width)
    if len(packed.strings) != layout.streams:
        raise FormatError(f"corrupt file: {len(packed.strings)} streams, the model codes {layout.streams}")
    guard_entropy_coders(model)
    try:
        with _evaluating(model), fixed_threads():
            x_hat = model.decompress(packed.strings, layout.shape, packed.size)["x_hat"]
    except FormatError:
        raise
    except Exception as exc:  # the quantizer choked on corrupt strings; report, never crash
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"corrupt data: the model cannot decode it ({msg[:200]})") from None
    if tuple(x_hat.shape) != (1, 3, height, width):
        raise FormatError(f"corrupt data: decoded to shape {tuple(x_hat.shape)}, expected (1, 3, {height}, {width})")
    # Garbage from a corrupt stream may be inf/NaN; make its pixels defined.
    return to_uint8(torch.nan_to_num(x_hat.float(), nan=0.0))[0]


def reconstruct_array(model, image: np.ndarray, *, max_pixels: int = container.MAX_PIXELS) -> np.ndarray:
    """The eval-mode forward reconstruction of one image, computed as the decoder computes (what decoding will give)."""
    import torch

    from rdkit_ae.data.sources import to_uint8

    _check_image(image, max_pixels)
    with _evaluating(model), fixed_threads():
        x_hat = model(_as_input(image, model))["x_hat"]
    return to_uint8(torch.nan_to_num(x_hat.float(), nan=0.0))[0]


# -- a loaded checkpoint ------------------------------------------------------------
@dataclass
class Codec:
    """A checkpoint ready to code: the model (eval, checked, guarded), its recipe and id."""

    model: Any
    recipe: Any
    id: bytes
    source: str = "model"
    max_pixels: int = container.MAX_PIXELS

    @classmethod
    def load(cls, path: str | Path, *, max_pixels: int = container.MAX_PIXELS) -> "Codec":
        from rdkit_ae.checkpoint import load_model

        model, recipe, _ = load_model(path)
        check_model(model, str(path))
        guard_entropy_coders(model)
        return cls(model, recipe, model_id(model, recipe), str(path), max_pixels)

    @classmethod
    def from_model(cls, model, recipe=None, *, max_pixels: int = container.MAX_PIXELS) -> "Codec":
        model.eval()
        check_model(model)
        guard_entropy_coders(model)
        recipe = recipe if recipe is not None else getattr(model, "recipe", None)
        return cls(model, recipe, model_id(model, recipe), "model", max_pixels)

    @property
    def id_hex(self) -> str:
        return container.format_id(self.id)

    def compress(self, image: np.ndarray) -> bytes:
        return compress_array(self.model, image, mid=self.id, max_pixels=self.max_pixels)

    def decompress(self, data: bytes) -> np.ndarray:
        return decompress_bytes(self.model, data, mid=self.id, max_pixels=self.max_pixels)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        return reconstruct_array(self.model, image, max_pixels=self.max_pixels)


# -- files ---------------------------------------------------------------------------
@dataclass
class Report:
    """What ``rdkit compress`` / ``decompress`` print for one file."""

    source: str
    output: str
    height: int
    width: int
    nbytes: int
    header_bytes: int
    psnr: float | None = None
    ssim: float | None = None
    verified: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        return 8.0 * self.nbytes / (self.height * self.width)

    @property
    def cr(self) -> float:
        return 24.0 / self.bpp


def read_rdk(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read an ``.rdk`` file, refusing one larger than ``max_bytes`` before reading it."""
    p = Path(path)
    try:
        if not p.is_file():
            raise FormatError(f"file not found: {p}" if not p.exists() else f"not a file: {p}")
        size = p.stat().st_size
        if size > max_bytes:
            raise FormatError(f"{p}: {size:,} bytes is larger than an .rdk file may be ({max_bytes:,})")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise FormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise FormatError(f"{p}: larger than an .rdk file may be ({max_bytes:,} bytes)")
    return data


def _write(path: Path, data: bytes) -> None:
    from rdkit_ae.files import atomic_write_bytes

    try:
        atomic_write_bytes(path, lambda f: f.write(data))
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None


_FORMATS = {".png": "PNG", ".bmp": "BMP", ".ppm": "PPM", ".tif": "TIFF", ".tiff": "TIFF"}


def encode_image(image: np.ndarray, suffix: str = ".png") -> bytes:
    """A uint8 (H, W, 3) image as lossless file bytes (PNG unless ``suffix`` names another); deterministic."""
    import io

    from PIL import Image

    fmt = _FORMATS.get(suffix.lower(), "PNG")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format=fmt)
    return buf.getvalue()


def _prefixed(exc: RdkitError, source) -> RdkitError:
    """The same kind of error, its message starting with the file it concerns."""
    msg = str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}"
    kind = (
        type(exc)
        if type(exc).__init__ is Exception.__init__
        else (FormatError if isinstance(exc, FormatError) else RdkitError)
    )
    return kind(msg)


def compress_file(codec: Codec, source: str | Path, output: str | Path, *, verify: bool = False) -> Report:
    """Compress an image file to ``output`` (written atomically, only once everything succeeded)."""
    from rdkit_ae.data.sources import read_image
    from rdkit_ae.evaluation.metrics import quality

    try:
        image, notes = read_image(source)
        if not image.flags.writeable:  # Pillow's arrays are read-only; torch warns on those
            image = image.copy()
        data = codec.compress(image)
        reference = codec.reconstruct(image)
        verified = False
        if verify:
            decoded = codec.decompress(data)
            if not np.array_equal(decoded, reference):
                diff = int((decoded != reference).any(axis=2).sum())
                raise RdkitError(
                    f"verification failed: the decoded image differs from the model's reconstruction in {diff} pixels"
                )
            verified = True
        _write(Path(output), data)
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    h, w = image.shape[:2]
    scores = quality(image[None], reference[None])[0]
    return Report(
        str(source),
        str(output),
        h,
        w,
        len(data),
        container.header_size(data, max_pixels=codec.max_pixels),
        scores["psnr"],
        scores["ssim"],
        verified,
        notes,
    )


def decompress_file(codec: Codec, source: str | Path, output: str | Path) -> Report:
    """Decode an ``.rdk`` file to an image at ``output`` (written atomically, only after a full decode)."""
    try:
        data = read_rdk(source)
        image = codec.decompress(data)
        _write(Path(output), encode_image(image, Path(output).suffix))
    except ModelMismatchError as exc:
        raise ModelMismatchError(exc.file_id, exc.model_id, codec.source, str(source)) from None
    except RdkitError as exc:
        raise _prefixed(exc, source) from None
    h, w = image.shape[:2]
    return Report(str(source), str(output), h, w, len(data), container.header_size(data, max_pixels=codec.max_pixels))
