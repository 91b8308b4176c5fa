"""Decoding ``.rdk`` files with an ONNX export: ONNX Runtime for every network, NumPy and rANS for the rest.

Reads only the export folder (graphs, tables, manifest) and the file, never
a checkpoint or torch model. The file is parsed and checked by
:mod:`rdkit_ae.codec.container` exactly as the torch codec does (size, bomb
bound, model id, stream count, rate position, and for versions 3/4 the
digest of the decoded symbols folded into the CRC). The symbols are those of
the torch decoder, bit for bit (the entropy parameters are integer graphs in
float64); the synthesis runs in float32 in ONNX Runtime, so pixels may differ
from torch's by one level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdkit_ae.codec import container
from rdkit_ae.codec.identity import ModelMismatchError
from rdkit_ae.errors import FormatError, RdkitError
from rdkit_ae.interop.onnx import deps
from rdkit_ae.interop.onnx import entropy as E
from rdkit_ae.interop.onnx.graphs import session
from rdkit_ae.interop.onnx.manifest import DECODES, ExportDirError, GraphSpec, Manifest, read_manifest
from rdkit_ae.interop.onnx.tables import load_tables
from rdkit_ae.text import one_line

MAX_GRAPH_BYTES = 1 << 30
_ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)"}


class ExportMismatchError(ModelMismatchError):
    """An ``.rdk`` file made by another model than the exported one."""

    def __init__(self, file_id: bytes, model_id: bytes, export: str, source: str = ""):
        self.file_id, self.model_id = bytes(file_id), bytes(model_id)
        FormatError.__init__(
            self,
            f"{source + ': ' if source else ''}made by model {container.format_id(file_id)}, but {export} is model "
            f"{container.format_id(model_id)}; decode it with an export of the checkpoint that compressed it",
        )


@dataclass
class Decoded:
    """A decoded file: the image, and the symbols of every rANS string in decoding order (``names``)."""

    image: np.ndarray
    symbols: list[np.ndarray]
    names: list[str]
    digest: int
    rate: float | None


class _Graph:
    """One checked graph in an ONNX Runtime session; ``run`` checks the output's shape."""

    def __init__(self, folder: Path, name: str, spec: GraphSpec, threads: int):
        onnx = deps.onnx()
        path = folder / spec.file
        where = f"ONNX export {folder}: graph '{name}' ({spec.file})"
        if not path.is_file() or path.is_symlink():
            raise ExportDirError(f"{where}: missing (or not a plain file)")
        if path.stat().st_size > MAX_GRAPH_BYTES:
            raise ExportDirError(f"{where}: larger than {MAX_GRAPH_BYTES:,} bytes")
        data = path.read_bytes()
        try:
            model = onnx.load_model_from_string(data)
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike: the file is bad
            raise ExportDirError(f"{where}: not a valid ONNX graph ({one_line(exc, 160)})") from None
        # External data would make the runtime read files named by the graph: refused.
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise ExportDirError(f"{where}: refers to external data files (not allowed)")
        try:
            self.session = session(data, threads)
        except Exception as exc:  # noqa: BLE001 - the runtime refused the graph
            raise ExportDirError(f"{where}: ONNX Runtime cannot load it ({one_line(exc, 160)})") from None
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        io = [(ins[0].name, ins[0].type), (outs[0].name, outs[0].type)] if len(ins) == len(outs) == 1 else []
        dtype = _ORT_TYPES[spec.dtype]
        if io != [(spec.input, dtype), (spec.output, dtype)]:
            raise ExportDirError(f"{where}: its input and output are not those the manifest lists")
        self.spec, self.name = spec, name
        self.dtype = np.float32 if spec.dtype == "float32" else np.float64

    def run(self, x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        out = self.session.run(None, {self.spec.input: np.ascontiguousarray(x, dtype=self.dtype)})[0]
        if out.shape != (x.shape[0], self.spec.out_channels, *out_hw):
            raise FormatError(
                f"graph '{self.name}' gave shape {out.shape}, expected {(1, self.spec.out_channels, *out_hw)}"
            )
        return out


class OnnxDecoder:
    """An ONNX export ready to decode ``.rdk`` files: ``OnnxDecoder(folder).decompress(data) -> uint8 (H, W, 3)``.

    ``threads``: ONNX Runtime's intra-op threads (1, like the torch codec).
    ``max_pixels`` / ``pixels_per_byte``: the container's limits, as
    :class:`rdkit_ae.codec.Codec` (None per byte for trusted files).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int = 1,
        max_pixels: int = container.MAX_PIXELS,
        pixels_per_byte: int | None = container.PIXELS_PER_BYTE,
    ):
        deps.onnxruntime(), deps.onnx()  # before reading anything: one line if the extra is missing
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        self.tables = load_tables(self.folder, self.manifest)
        self.max_pixels, self.pixels_per_byte = max_pixels, pixels_per_byte
        needed = ["hyper_synthesis", "synthesis"] + (["context", "parameters"] if self._checkerboard else [])
        missing = [n for n in needed if n not in self.manifest.graphs]
        if missing:
            raise ExportDirError(f"{self.source}: the manifest lists no graph '{missing[0]}'")
        self.graphs = {n: _Graph(self.folder, n, self.manifest.graphs[n], threads) for n in needed}
        self._check_channels()
        self.entropy = E.EntropyDecoder(self.tables)

    @property
    def _checkerboard(self) -> bool:
        return self.manifest.family == "checkerboard"

    def _check_channels(self) -> None:
        m, g = self.manifest, self.graphs
        side = m.channels * (1 if m.family == "hyperprior" else 2)
        ok = (g["hyper_synthesis"].spec.in_channels, g["hyper_synthesis"].spec.out_channels) == (m.hyper_channels, side)
        ok = ok and g["synthesis"].spec.in_channels == m.channels and g["synthesis"].spec.out_channels == 3
        if self._checkerboard:
            ok = ok and (g["context"].spec.in_channels, g["context"].spec.out_channels) == (m.channels, 2 * m.channels)
            ok = ok and (g["parameters"].spec.in_channels, g["parameters"].spec.out_channels) == (4 * m.channels, side)
        if not ok:
            raise ExportDirError(f"{self.source}: the graphs' channels do not fit the latent's")

    # -- what the CLI shows --
    @property
    def source(self) -> str:
        return f"ONNX export {self.folder}"

    @property
    def id(self) -> bytes:
        return self.manifest.model_id

    @property
    def id_hex(self) -> str:
        return container.format_id(self.id)

    # -- decoding --
    def decompress(self, data: bytes, *, trusted: bool = False) -> np.ndarray:
        """Decode ``.rdk`` bytes to a uint8 (H, W, 3) image; any defect raises a one-line :class:`FormatError`."""
        return self.decode(data, trusted=trusted).image

    def decode(self, data: bytes, *, trusted: bool = False) -> Decoded:
        """The image and the decoded symbols of ``.rdk`` bytes (checked as the torch codec checks them)."""
        m = self.manifest
        packed = container.unpack(
            data, max_pixels=self.max_pixels, pixels_per_byte=None if trusted else self.pixels_per_byte
        )
        if packed.model_id != m.model_id:
            raise ExportMismatchError(packed.model_id, m.model_id, self.source)
        if packed.version not in DECODES:
            raise FormatError(
                f"the ONNX backend decodes .rdk versions {' and '.join(map(str, DECODES))}; this file is version "
                f"{packed.version} (rdkit-ae 0.1-0.2), decode it with its checkpoint (--backend torch)"
            )
        container.check_stream_count(len(packed.strings), container.Layout(None, m.streams))
        rate = self._rate(packed.rate)
        height, width = packed.size
        h, w = ((s + (-s) % m.stride) // m.encoder_stride for s in (height, width))
        ledger = self.entropy.reset()
        try:
            names, symbols, y = self._latent([s[0] for s in packed.strings], h, w, rate)
            x = self.graphs["synthesis"].run(y, (h * m.encoder_stride, w * m.encoder_stride))
        except FormatError as exc:  # checked only after decoding: what failed first is most likely damage
            raise FormatError(f"corrupt or truncated file: {exc}") from None
        except RdkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime or coder choked on corrupt data; report, never crash
            raise FormatError(f"corrupt data: the ONNX decoder cannot decode it ({one_line(exc, 200)})") from None
        packed.check_symbols(ledger.digest)
        return Decoded(_to_image(x[..., :height, :width]), symbols, names, ledger.digest, rate)

    def _rate(self, rate: float | None) -> float | None:
        m = self.manifest
        if rate is None:
            return m.default_rate  # a version 3 file of a variable-rate model decodes at its default point
        if m.lambdas is None:
            raise FormatError(f"corrupt file: it stores rate position {rate:g}, but the model has a single rate")
        if not 0 <= rate <= len(m.lambdas) - 1:
            raise FormatError(f"corrupt file: rate position {rate:g} is outside the model's 0..{len(m.lambdas) - 1}")
        return rate

    def _latent(self, strings: list[bytes], h: int, w: int, rate: float | None):
        """(names, symbols, y_hat float32 (1, M, h, w)) from the streams: z, then y with its entropy parameters."""
        m, ent = self.manifest, self.entropy
        zh, zw = h // m.hyper_stride, w // m.hyper_stride
        z_symbols, z_hat = ent.z_hat(strings[-1], (zh, zw))
        side = self.graphs["hyper_synthesis"].run(E.to_grid(z_hat), (h, w))
        if self._checkerboard:
            names, symbols, grid = self._checkerboard_y(strings, side)
        else:
            scales, means = (side, None) if m.family == "hyperprior" else (side[:, : m.channels], side[:, m.channels :])
            y_symbols, grid = ent.y_grid(strings[0], scales, means)
            names, symbols = ["y"], [y_symbols]
        y = E.to_latent(grid)
        if rate is not None:
            y = y * E.inverse_gain(self.tables, rate)[None, :, None, None]
        return ["z", *names], [z_symbols, *symbols], y

    def _checkerboard_y(self, strings: list[bytes], side: np.ndarray):
        """Anchors from the side parameters alone, then the rest with the context of the decoded anchors."""
        M, ent = self.manifest.channels, self.entropy
        halves_side = E.unembed(side)
        _, _, _, h, half = halves_side.shape
        params = self.graphs["parameters"]
        context = np.zeros((1, 2 * M, h, half))
        p = params.run(np.concatenate([context, halves_side[0]], axis=1), (h, half))
        a_symbols, anchors = ent.y_grid(strings[0], p[:, :M], p[:, M:])
        full = E.embed(np.stack([anchors, np.zeros_like(anchors)]))
        context = E.unembed(self.graphs["context"].run(full, (h, 2 * half)))[1]
        p = params.run(np.concatenate([context, halves_side[1]], axis=1), (h, half))
        n_symbols, rest = ent.y_grid(strings[1], p[:, :M], p[:, M:])
        return ["y anchors", "y non-anchors"], [a_symbols, n_symbols], E.embed(np.stack([anchors, rest]))


def _to_image(x: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 -> uint8 (H, W, 3): NaN to 0, clamp to [0, 1], times 255, rounded (as the torch codec)."""
    x = np.clip(np.nan_to_num(x[0].astype(np.float32), nan=0.0), 0.0, 1.0)
    return np.round(x * np.float32(255)).astype(np.uint8).transpose(1, 2, 0).copy()


__all__ = ["Decoded", "ExportMismatchError", "OnnxDecoder"]
