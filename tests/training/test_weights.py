"""8-bit weights made safe on processors without VNNI (training.weights): quantised
again in 7 bits, or stored as uint8; onnxruntime's fused integer convolution then
computes exactly what the model says on every processor, and still fuses. An older
8-bit model is run as it is, with a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the training extra

ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lungseg.inference.card import SAFE_FORMAT_MARK  # noqa: E402
from lungseg.inference.model import SegmentationModel  # noqa: E402
from lungseg.training.weights import (  # noqa: E402
    UNSIGNED_ZERO_POINT,
    WEIGHT_LEVELS,
    seven_bit_weights,
    unsigned_weights,
)

CHANNELS = 3
IN_SCALE = 1.0 / 255.0
OUT_SCALE = 0.05


def qdq_convolution(path: Path, weights: np.ndarray, scales: np.ndarray, bias: np.ndarray) -> Path:
    """x in [0, 1] -> Q/DQ (uint8) -> Conv 3x3 with int8 weights per output channel
    (zero point 0, as quantize_static writes them) and an int32 bias (scale: input x
    weight scale) -> Q/DQ (uint8): the pattern onnxruntime fuses into one integer
    convolution."""

    def constant(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array, name)

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], pads=[1, 1, 1, 1]),
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
            constant("b", bias),
            constant("bs", (scales * np.float32(IN_SCALE)).astype(np.float32)),
            constant("bz", np.zeros(CHANNELS, np.int32)),
            constant("ys", np.float32(OUT_SCALE)),
            constant("yz", np.uint8(0)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def constants(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def arithmetic(path: Path, x: np.ndarray) -> np.ndarray:
    """What the model says, in float64: dequantised input, weights and bias, a 3x3
    convolution, the output quantised."""
    stored = constants(path)
    xq = np.clip(np.round(x / IN_SCALE), 0, 255) * IN_SCALE
    padded = np.pad(xq[0, 0], 1)
    w = stored["w"].astype(np.float64) * stored["ws"][:, None, None, None]
    y = np.zeros((CHANNELS, 8, 8)) + (stored["b"] * stored["bs"])[:, None, None]
    for dy in range(3):
        for dx in range(3):
            y += w[:, 0, dy, dx, None, None] * padded[dy : dy + 8, dx : dx + 8]
    return (np.clip(np.round(y / OUT_SCALE), 0, 255) * OUT_SCALE)[np.newaxis]


def run(path: Path, x: np.ndarray, optimised: Path | None = None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimised is not None:  # keep the graph onnxruntime runs, to see what it fused
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimised)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def fused_run(path: Path, x: np.ndarray, scratch: Path) -> np.ndarray:
    """The model's answer from onnxruntime, which must have fused its convolution into
    one integer convolution (the fast kernel)."""
    got = run(path, x, optimised=scratch / "fused.onnx")
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(scratch / "fused.onnx")).graph.node}
    return got


def saturating(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A convolution whose bright pixels times its largest weights make pairs of
    products over 16 bits, where processors without VNNI saturate 8-bit weights."""
    weights = np.full((CHANNELS, 1, 3, 3), 127, np.int8)
    weights[1] = -127
    weights[2, 0, 1] = [-128, 0, 5]
    scales = np.array([0.001, 0.001, 0.002], np.float32)
    bias = np.array([-20000, 30000, 1000], np.int32)
    x = np.random.default_rng(0).uniform(0.5, 1.0, (1, 1, 8, 8)).astype(np.float32)
    return qdq_convolution(tmp_path / "int8.onnx", weights, scales, bias), weights, scales, bias, x


def test_seven_bit_weights_are_computed_exactly_and_still_fused(tmp_path: Path) -> None:
    source, weights, scales, bias, x = saturating(tmp_path)

    target = tmp_path / "seven.onnx"
    assert seven_bit_weights(source, target) == 1
    stored = constants(target)
    assert stored["w"].dtype == np.int8
    np.testing.assert_array_equal(np.abs(stored["w"]).reshape(CHANNELS, -1).max(1), WEIGHT_LEVELS)
    # the same network: weights and bias within half a 7-bit step of the 8-bit ones
    np.testing.assert_allclose(
        stored["w"] * stored["ws"][:, None, None, None],
        weights * scales[:, None, None, None],
        atol=float(stored["ws"].max()) / 2 + 1e-9,
    )
    np.testing.assert_allclose(stored["b"] * stored["bs"], bias * scales * IN_SCALE, rtol=1e-3)
    # computed exactly where it runs (the fused kernel), and fused
    got = fused_run(target, x, tmp_path)
    np.testing.assert_allclose(got, arithmetic(target, x), atol=OUT_SCALE + 1e-6)
    # the 8-bit model's own answer, but for the 7-bit rounding
    np.testing.assert_allclose(got, arithmetic(source, x), atol=4 * OUT_SCALE)
    # done twice, nothing left to change
    assert seven_bit_weights(target, tmp_path / "again.onnx") == 0


def test_unsigned_weights_are_the_same_values_computed_exactly(tmp_path: Path) -> None:
    source, weights, _, _, x = saturating(tmp_path)

    target = tmp_path / "unsigned.onnx"
    assert unsigned_weights(source, target) == 1
    stored = constants(target)
    assert stored["w"].dtype == np.uint8
    np.testing.assert_array_equal(stored["w"].astype(int) - UNSIGNED_ZERO_POINT, weights)
    np.testing.assert_array_equal(stored["wz"], np.full(CHANNELS, UNSIGNED_ZERO_POINT))
    got = fused_run(target, x, tmp_path)
    np.testing.assert_allclose(got, arithmetic(source, x), atol=OUT_SCALE + 1e-6)
    assert unsigned_weights(target, tmp_path / "again.onnx") == 0


def card(path: Path, quantization: str) -> Path:
    """A card beside the model: 8 px input, three classes, its weights' format."""
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "input": {"preprocessing": {"size": 8}},
                "output": {"classes": ["background", "right_lung", "left_lung"]},
                "onnx": {"quantization": {"format": quantization}},
            }
        )
    )
    return path


def test_an_older_8bit_model_is_run_as_it_is_with_a_warning(tmp_path: Path) -> None:
    source, *_ = saturating(tmp_path)
    card(source, "onnxruntime QDQ, int8 weights per output channel, uint8 activations")
    with pytest.warns(UserWarning, match="saturate on processors without VNNI"):
        SegmentationModel(source)


def test_a_model_with_safe_weights_loads_as_it_is(tmp_path: Path) -> None:
    source, *_, x = saturating(tmp_path)
    target = tmp_path / "seven.onnx"
    seven_bit_weights(source, target)
    card(target, f"int8 weights in 7 bits ({SAFE_FORMAT_MARK})")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning
        model = SegmentationModel(target)
    np.testing.assert_allclose(model.scores(x[:, 0]), arithmetic(target, x), atol=OUT_SCALE + 1e-6)
