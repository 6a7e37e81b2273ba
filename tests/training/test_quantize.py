"""8-bit weights stored unsigned (training.quantize.unsigned_weights): the same values,
and onnxruntime's integer convolution then computes exactly what the model says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the training extra
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lungseg.training.quantize import UNSIGNED_ZERO_POINT, unsigned_weights  # noqa: E402

CHANNELS = 3
IN_SCALE = 1.0 / 255.0
OUT_SCALE = 0.05


def qdq_convolution(path: Path, weights: np.ndarray, scales: np.ndarray) -> Path:
    """x in [0, 1] -> Q/DQ (uint8) -> Conv 3x3 with int8 weights per output channel
    (zero point 0, as quantize_static writes them) -> Q/DQ (uint8): the pattern
    onnxruntime fuses into one integer convolution."""

    def constant(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array, name)

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, CHANNELS, 8, 8])],
        [
            constant("xs", np.float32(IN_SCALE)),
            constant("xz", np.uint8(0)),
            constant("w", weights),
            constant("ws", scales),
            constant("wz", np.zeros(CHANNELS, np.int8)),
            constant("ys", np.float32(OUT_SCALE)),
            constant("yz", np.uint8(0)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def reference(x: np.ndarray, weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """What the model says, in float: dequantised input and weights, a 3x3 convolution,
    the output quantised."""
    xq = np.clip(np.round(x / IN_SCALE), 0, 255) * IN_SCALE
    padded = np.pad(xq[0, 0], 1)
    w = weights.astype(np.float64) * scales[:, None, None, None]
    y = np.zeros((CHANNELS, 8, 8))
    for dy in range(3):
        for dx in range(3):
            y += w[:, 0, dy, dx, None, None] * padded[dy : dy + 8, dx : dx + 8]
    return (np.clip(np.round(y / OUT_SCALE), 0, 255) * OUT_SCALE)[np.newaxis]


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_unsigned_weights_give_exactly_the_models_arithmetic(tmp_path: Path) -> None:
    # bright pixels times the largest weights: a pair of products over 16 bits, where
    # processors without VNNI saturate int8 weights
    weights = np.full((CHANNELS, 1, 3, 3), 127, np.int8)
    weights[1] = -127
    weights[2, 0, 1] = [-128, 0, 5]
    scales = np.array([0.001, 0.001, 0.002], np.float32)
    x = np.random.default_rng(0).uniform(0.5, 1.0, (1, 1, 8, 8)).astype(np.float32)
    source = qdq_convolution(tmp_path / "int8.onnx", weights, scales)

    assert unsigned_weights(source, tmp_path / "unsigned.onnx") == 1
    model = onnx.load(str(tmp_path / "unsigned.onnx"))
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert stored["w"].dtype == np.uint8
    np.testing.assert_array_equal(stored["w"].astype(int) - UNSIGNED_ZERO_POINT, weights)
    np.testing.assert_array_equal(stored["wz"], np.full(CHANNELS, UNSIGNED_ZERO_POINT))
    expected = reference(x, weights, scales)
    np.testing.assert_allclose(run(tmp_path / "unsigned.onnx", x), expected, atol=OUT_SCALE)
    # done twice, nothing left to change
    assert unsigned_weights(tmp_path / "unsigned.onnx", tmp_path / "again.onnx") == 0
