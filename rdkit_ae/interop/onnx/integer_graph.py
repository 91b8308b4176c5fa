"""An :class:`~rdkit_ae.plugin.exact.IntegerNetwork` as an ONNX graph in float64 that computes the same integers.

ONNX Runtime's CPU ``Conv`` has no double kernel, so every convolution is
written as one ``MatMul`` per kernel tap on a shifted slice of the padded
input (``(cout, cin) @ (cin, h*w)``), added up in a chain.
Inputs, integer weights and every partial sum are integers below 2**53 (the
bound :meth:`IntegerNetwork.check` proves), so float64 holds each exactly and
the result does not depend on the summation order: any runtime's MatMul gives
the torch path's bits. The rounding back to the activation grid,
``floor((acc + b + 2**11) / 2**12)`` clamped to ``+-2**24``, and the leaky
ReLU's dyadic slope are exact in float64 as well.

A transposed convolution of stride ``s`` is computed per output phase
(``s * s`` small stride-1 correlations, as ``rdkit_ae.plugin.exact`` does)
and the phases are interleaved with ``DepthToSpace``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rdkit_ae.errors import RdkitError
from rdkit_ae.plugin.exact import ACT_BITS, ACT_LIMIT, SLOPE_BITS, WEIGHT_BITS

OPSET = 17
END = np.iinfo(np.int64).max  # Slice "to the end"


class UnsupportedNetwork(RdkitError):
    """An integer network with a layer this exporter cannot write exactly."""


class GraphBuilder:
    """Nodes and constants of one ONNX graph, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _scalar(g: GraphBuilder, value: float) -> str:
    return g.const("c", np.array(value, dtype=np.float64))


def _taps_sum(g: GraphBuilder, x: str, taps: list[tuple[np.ndarray, int, int]], pad: int, start: np.ndarray) -> str:
    """``start + sum_tap w_tap @ x[:, :, r + dy, c + dx]`` over a zero-padded NCHW input (same output size).

    Each tap's slice is flattened to ``(n, cin, h*w)`` so that one GEMM
    ``(cout, cin) @ (cin, h*w)`` computes it; the sum is reshaped back once.
    """
    padded = x
    if pad:
        pads = g.const("pads", np.array([0, 0, pad, pad, 0, 0, pad, pad], dtype=np.int64))
        padded = g.op("Pad", [x, pads, _scalar(g, 0.0)], mode="constant")
    acc = g.const("start", start.astype(np.float64)[:, None])
    flat = g.const("flat", np.array([0, 0, -1], dtype=np.int64))
    for w, dy, dx in taps:
        ends = [END if pad - d == 0 else -(pad - d) for d in (dy, dx)]
        part = g.op(
            "Slice",
            [
                padded,
                g.const("starts", np.array([pad + dy, pad + dx], dtype=np.int64)),
                g.const("ends", np.array(ends, dtype=np.int64)),
                g.const("axes", np.array([2, 3], dtype=np.int64)),
            ],
        )
        product = g.op("MatMul", [g.const("w", w.astype(np.float64)), g.op("Reshape", [part, flat])])
        acc = g.op("Add", [acc, product])
    # Back to (n, cout, h, w): the output has the input's spatial size.
    size = g.op("Slice", [g.op("Shape", [x]), _ints(g, [2]), _ints(g, [4]), _ints(g, [0])])
    shape = g.op("Concat", [_ints(g, [0, start.shape[0]]), size], axis=0)
    return g.op("Reshape", [acc, shape])


def _ints(g: GraphBuilder, values: list[int]) -> str:
    return g.const("i", np.array(values, dtype=np.int64))


def _to_grid(g: GraphBuilder, acc: str) -> str:
    """``clamp(floor(acc / 2**WEIGHT_BITS), +-ACT_LIMIT)``: exact in float64."""
    scaled = g.op("Floor", [g.op("Mul", [acc, _scalar(g, 1.0 / (1 << WEIGHT_BITS))])])
    return g.op("Clip", [scaled, _scalar(g, -ACT_LIMIT), _scalar(g, ACT_LIMIT)])


def _conv(g: GraphBuilder, x: str, w: np.ndarray, b: np.ndarray, op: tuple) -> str:
    _, i, stride, padding, dilation, groups, _ = op
    _, _, kh, kw = w.shape
    if (
        stride != (1, 1)
        or dilation != (1, 1)
        or groups != 1
        or kh != kw
        or padding != ((kh - 1) // 2,) * 2
        or kh % 2 == 0
    ):
        raise UnsupportedNetwork(f"layer {i}: only 'same' stride-1 convolutions with an odd square kernel are exported")
    p = padding[0]
    taps = [(w[:, :, ky, kx], ky - p, kx - p) for ky in range(kh) for kx in range(kw) if w[:, :, ky, kx].any()]
    taps = taps or [(0 * w[:, :, 0, 0], 0, 0)]  # all weights zero: one zero tap keeps the shapes
    return _to_grid(g, _taps_sum(g, x, taps, p, b + float(1 << (WEIGHT_BITS - 1))))


def _deconv(g: GraphBuilder, x: str, w: np.ndarray, b: np.ndarray, op: tuple) -> str:
    """A transposed convolution whose output is ``s`` times its input, one stride-1 correlation per output phase.

    Output row ``s*q + r`` gets kernel rows ``ky`` with ``(r + p - ky) % s == 0``, from input row ``q + (r+p-ky)//s``.
    """
    _, i, stride, padding, dilation, groups, extra = op
    _, cout, kh, kw = w.shape
    s, p = stride[0], padding[0]
    square = stride == (s, s) and padding == (p, p) and extra == (extra[0],) * 2 and kh == kw
    if not square or dilation != (1, 1) or groups != 1 or kh + extra[0] - 2 * p != s or kh < s:
        raise UnsupportedNetwork(
            f"layer {i}: only transposed convolutions whose output is exactly stride x the input are exported"
        )
    offsets = [(r + p - k) // s for r in range(s) for k in range(kh) if (r + p - k) % s == 0]
    pad = max(abs(d) for d in offsets)
    start = b + float(1 << (WEIGHT_BITS - 1))
    phases = []
    for ry in range(s):
        for rx in range(s):
            taps = [
                (w[:, :, ky, kx].T, (ry + p - ky) // s, (rx + p - kx) // s)
                for ky in range(kh)
                for kx in range(kw)
                if (ry + p - ky) % s == 0 and (rx + p - kx) % s == 0 and w[:, :, ky, kx].any()
            ]
            phases.append(_taps_sum(g, x, taps or [(0 * w[:, :, 0, 0].T, 0, 0)], pad, start))
    # DCR DepthToSpace: channel (ry * s + rx) * cout + c goes to pixel (s*q + ry, s*q' + rx).
    return _to_grid(g, g.op("DepthToSpace", [g.op("Concat", phases, axis=1)], blocksize=s, mode="DCR"))


def _activation(g: GraphBuilder, x: str, op: tuple) -> str:
    if op[0] == "relu":
        return g.op("Max", [x, _scalar(g, 0.0)])
    if op[0] == "leaky":
        # floor(min(x, 0) * k / 2**16 + 1/2) + max(x, 0): the slope is dyadic, every step exact.
        negative = g.op("Mul", [g.op("Min", [x, _scalar(g, 0.0)]), _scalar(g, op[2] / (1 << SLOPE_BITS))])
        rounded = g.op("Floor", [g.op("Add", [negative, _scalar(g, 0.5)])])
        return g.op("Add", [g.op("Max", [x, _scalar(g, 0.0)]), rounded])
    return x  # identity


def integer_graph(net, name: str, in_name: str = "x", out_name: str = "y"):
    """The ONNX model (float64 NCHW in and out, dynamic batch/height/width) of a converted ``IntegerNetwork``."""
    from onnx import TensorProto, helper

    if not net.ready:
        raise UnsupportedNetwork(f"integer network '{name}' is not converted (run model.update())")
    g = GraphBuilder()
    x = in_name
    channels_in = channels_out = None
    for op in net.ops:
        if op[0] in ("conv", "deconv"):
            w = getattr(net, f"w{op[1]}").detach().cpu().numpy().astype(np.float64)
            b = getattr(net, f"b{op[1]}").detach().cpu().numpy().astype(np.float64)
            cin = w.shape[1] if op[0] == "conv" else w.shape[0]
            channels_in = cin if channels_in is None else channels_in
            channels_out = w.shape[0] if op[0] == "conv" else w.shape[1]
            x = (_conv if op[0] == "conv" else _deconv)(g, x, w, b, op)
        else:
            x = _activation(g, x, op)
    g.nodes.append(helper.make_node("Identity", [x], [out_name]))
    dims_in = ["batch", channels_in, "height", "width"]
    dims_out = ["batch", channels_out, "out_height", "out_width"]
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(in_name, TensorProto.DOUBLE, dims_in)],
        [helper.make_tensor_value_info(out_name, TensorProto.DOUBLE, dims_out)],
        g.initializers,
    )
    doc = f"rdkit-ae integer network '{name}': grid 2**-{ACT_BITS} activations in, grid integers out, exact in float64"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.producer_name = "rdkit-ae"
    return model


__all__ = ["OPSET", "UnsupportedNetwork", "integer_graph"]
