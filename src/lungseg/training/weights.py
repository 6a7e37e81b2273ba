"""8-bit weights that onnxruntime computes the same on every processor.

onnxruntime multiplies uint8 activations by int8 weights with an instruction
(``vpmaddubsw``) that adds two products into 16 bits and saturates on x86 processors
without VNNI (AVX2 only: AMD before Zen 4, Intel laptop and desktop chips before Ice
Lake): with 8-bit weights, 255 x 127 x 2 is over 32767, and on such a machine the
models lungseg shipped before decided 8 % of lung pixels unlike their own arithmetic.
Two ways out, each exact on every processor:

* ``seven_bit_weights``: the weights quantised again in 7 bits (255 x 64 x 2 <
  32768), the same fast kernel, each weight rounded once more;
* ``unsigned_weights``: the very same 8-bit values stored as uint8 with zero point
  128, run by the uint8 x uint8 kernel (16-bit products summed in 32 bits), a quarter
  to a third slower where VNNI is missing (``benchmarks/int8_kernels.py``).

``training.quantize`` applies them to every model it writes, and the card says so
(``inference.card.SAFE_FORMAT_MARK``). Needs the ``onnx`` package (the training extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.inference.card import SAFE_FORMAT_MARK

UNSIGNED_ZERO_POINT = 128
WEIGHT_LEVELS = 63
"""Weights in 7 bits: int8 in [-64, 63], the largest of each output channel at 63."""


def make_unsigned(model: Any) -> int:
    """Store every int8 weight of the QDQ ``onnx.ModelProto`` (a constant that a
    DequantizeLinear reads, zero point 0 as ``quantize_static`` makes them) as uint8
    with zero point 128, in place: the same dequantised values. Returns how many."""
    import onnx
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        weights = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weights is None or weights.data_type != onnx.TensorProto.INT8:
            continue
        if len(node.input) < 3 or node.input[2] not in constants:
            raise LungsegError(f"int8 weights {weights.name} without a zero point")
        zero = constants[node.input[2]]
        for tensor in (weights, zero):
            shifted = numpy_helper.to_array(tensor).astype(np.int16) + UNSIGNED_ZERO_POINT
            tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), tensor.name))
        changed += 1
    return changed


def make_seven_bit(model: Any) -> int:
    """Quantise each convolution's (and Gemm's) 8-bit weights of the QDQ
    ``onnx.ModelProto`` again in 7 bits per output channel, in place, and its int32
    bias to the matching scale (input scale x weight scale, which onnxruntime's fused
    integer convolution requires). Weights stored as int8 (zero point 0) or as uint8
    (zero point 128) are taken. Returns how many (0: all were 7-bit already)."""
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}

    def dequantised_by(name: str) -> tuple[Any, Any, Any] | None:
        node = producers.get(name)
        if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 3:
            return None
        found = [constants.get(n) for n in node.input[:3]]
        return None if any(t is None for t in found) else (found[0], found[1], found[2])

    def put(tensor: Any, array: np.ndarray) -> None:
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))

    changed = 0
    for node in model.graph.node:
        quantised = dequantised_by(node.input[1]) if node.op_type in ("Conv", "Gemm") else None
        if quantised is None:
            continue
        weights, scale, zero = (numpy_helper.to_array(t) for t in quantised)
        if weights.dtype not in (np.int8, np.uint8) or len(set(zero.ravel().tolist())) != 1:
            raise LungsegError(f"weights {quantised[0].name} are not symmetric 8-bit")
        values = weights.astype(np.int32) - int(zero.ravel()[0])
        largest = np.abs(values.reshape(len(values), -1)).max(axis=1)
        if weights.dtype == np.int8 and largest.max() <= WEIGHT_LEVELS:
            continue
        factor = WEIGHT_LEVELS / np.maximum(largest, 1)
        per_channel = factor.reshape((-1,) + (1,) * (values.ndim - 1))
        put(quantised[0], np.clip(np.round(values * per_channel), -64, 63).astype(np.int8))
        put(quantised[1], (scale / factor).astype(np.float32))
        put(quantised[2], np.zeros(zero.shape, np.int8))
        bias = dequantised_by(node.input[2]) if len(node.input) > 2 else None
        if bias is not None:
            bias_values, bias_scale = (numpy_helper.to_array(t) for t in bias[:2])
            put(bias[0], np.round(bias_values * factor).astype(np.int32))
            put(bias[1], (bias_scale / factor).astype(np.float32))
        changed += 1
    return changed


def _rewrite(source: Path, target: Path, change: Any) -> int:
    import onnx

    model = onnx.load(str(source))
    try:
        changed = int(change(model))
    except LungsegError as error:
        raise LungsegError(f"{source}: {error}") from error
    partial = target.with_name(f".{target.name}.weights-partial")
    onnx.save(model, str(partial))
    partial.replace(target)
    return changed


def unsigned_weights(source: Path, target: Path) -> int:
    """``make_unsigned`` from file ``source`` to file ``target`` (written whole, even
    where nothing changed). Returns how many weights were changed."""
    return _rewrite(source, target, make_unsigned)


def seven_bit_weights(source: Path, target: Path) -> int:
    """``make_seven_bit`` from file ``source`` to file ``target`` (written whole, even
    where nothing changed). Returns how many weights were changed."""
    return _rewrite(source, target, make_seven_bit)


WEIGHT_FORMATS = {
    "seven-bit": (
        seven_bit_weights,
        "onnxruntime QDQ, int8 weights in 7 bits per output channel "
        f"({SAFE_FORMAT_MARK}), uint8 activations",
    ),
    "unsigned": (
        unsigned_weights,
        "onnxruntime QDQ, 8-bit weights per output channel stored as uint8 with zero "
        f"point 128 ({SAFE_FORMAT_MARK}), uint8 activations",
    ),
}
"""How an 8-bit model's weights are made safe on every processor, and what its card says
(``lungseg quantize --weights``)."""
DEFAULT_WEIGHTS = "seven-bit"
