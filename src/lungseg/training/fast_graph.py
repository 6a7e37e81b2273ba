"""The exported network rewritten so that onnxruntime runs it in integers: the same
function, other operators. ``training.quantize`` applies it before quantising.

Profiled on the shipped one-pass network (``onnxruntime`` 1.32, 2 cores), the int8 model
spent about 45 % of its time outside integer kernels:

* **PReLU.** onnxruntime has no integer PReLU, so every activation was dequantised, run
  in float and quantised again. MONAI's PReLU has one slope, so it is a ``LeakyRelu``
  with that slope, which runs as ``QLinearLeakyRelu``.
* **Transposed convolutions** (MONAI's up-sampling: 3x3, stride 2, padding 1, output
  padding 1) run in float on the CPU. Each output pixel of one is a 2x2 convolution of
  the input whose weights depend only on the pixel's phase (row and column even or
  odd), so it is a 2x2 convolution giving the four phases as channels, then
  ``DepthToSpace``: an integer convolution. The batch norm after it is folded in.
* **The softmax** over every class map. The decision is the argmax per head, which
  the logits give as well, so the rewritten graph gives the logits (output
  ``logits``); a softmax per head gives the probabilities back.

``rewrite_for_int8`` checks the result against the original on random inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lungseg.errors import LungsegError

LOGITS_NAME = "logits"

# ConvTranspose(3x3, stride 2, pads 1, output_padding 1), one dimension: output 2m is
# x[m] * w[1]; output 2m + 1 is x[m] * w[2] + x[m + 1] * w[0]. So phase p's 2-tap kernel
# reads kernel tap _TAP[p][d] at offset d (None: nothing).
_TAP = ((1, None), (2, 0))


def rewrite_for_int8(source: Path, target: Path, heads: Iterable[tuple[int, int]]) -> Path:
    """Write ``source`` (an export of ``training.export``) to ``target`` with the
    rewrites above; ``heads``: the output channels ``[start, stop)`` of each softmax."""
    model = onnx.load(str(source))
    graph = model.graph
    _prelu_to_leaky_relu(graph)
    _transposed_convolutions_to_phases(graph)
    _drop_softmax(graph, sorted(heads))
    _drop_unused(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    _check_same_function(source, target, sorted(heads))
    return target


def initializers(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


def _prelu_to_leaky_relu(graph: onnx.GraphProto) -> None:
    weights = initializers(graph)
    for node in graph.node:
        slope = weights.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is not None and slope.size == 1:
            leaky = helper.make_node(
                "LeakyRelu",
                [node.input[0]],
                list(node.output),
                name=node.name,
                alpha=float(slope.ravel()[0]),
            )
            node.CopyFrom(leaky)


def _is_upsampling(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return False
    a = _attributes(node)
    return (
        list(a.get("kernel_shape", weights[node.input[1]].shape[2:])) == [3, 3]
        and list(a.get("strides", [1, 1])) == [2, 2]
        and list(a.get("pads", [0] * 4)) == [1] * 4
        and list(a.get("output_padding", [0, 0])) == [1, 1]
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and a.get("group", 1) == 1
        and "auto_pad" not in a
        and (len(node.input) < 3 or node.input[2] in weights)
    )


def _transposed_convolutions_to_phases(graph: onnx.GraphProto) -> None:
    weights = initializers(graph)
    users = _consumers(graph)
    nodes: list[onnx.NodeProto] = []
    folded: set[str] = set()
    for node in graph.node:
        if node.name in folded:
            continue
        if not _is_upsampling(node, weights):
            nodes.append(node)
            continue
        kernel = weights[node.input[1]].astype(np.float64)  # (inputs, outputs, 3, 3)
        outputs = kernel.shape[1]
        bias = (
            weights[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(outputs)
        )
        result = node.output[0]
        after = users.get(result, [])
        if len(after) == 1 and _is_foldable_batch_norm(after[0], weights):
            norm = after[0]
            gamma, beta, mean, var = (weights[name].astype(np.float64) for name in norm.input[1:5])
            scale = gamma / np.sqrt(var + float(_attributes(norm).get("epsilon", 1e-5)))
            kernel = kernel * scale[None, :, None, None]
            bias = (bias - mean) * scale + beta
            result = norm.output[0]
            folded.add(norm.name)
        phases = transposed_to_phases(kernel)
        weight_name, bias_name = f"{node.name}/phases_weight", f"{node.name}/phases_bias"
        graph.initializer.extend(
            [
                numpy_helper.from_array(phases.astype(np.float32), weight_name),
                numpy_helper.from_array(np.tile(bias, 4).astype(np.float32), bias_name),
            ]
        )
        stacked = f"{node.name}/phases"
        nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], weight_name, bias_name],
                [stacked],
                name=f"{node.name}/phases_conv",
                kernel_shape=[2, 2],
                pads=[0, 0, 1, 1],  # the input's row and column past the end read as zero
            )
        )
        nodes.append(
            helper.make_node(
                "DepthToSpace", [stacked], [result], name=f"{node.name}/interleave", blocksize=2
            )
        )  # mode DCR: channel (row_phase * 2 + col_phase) * outputs + o -> pixel's phase
    _replace_nodes(graph, nodes)


def _phase_taps(outputs: int) -> Iterable[tuple[slice, int, int, int, int]]:
    """(channel block of a phase, dy, dx, kernel row, kernel column) for every tap of the
    phase convolutions: each of the 3x3 kernel's taps is read by exactly one of them."""
    for row_phase in (0, 1):
        for col_phase in (0, 1):
            phase = row_phase * 2 + col_phase
            block = slice(phase * outputs, (phase + 1) * outputs)
            for dy in (0, 1):
                for dx in (0, 1):
                    ty, tx = _TAP[row_phase][dy], _TAP[col_phase][dx]
                    if ty is not None and tx is not None:
                        yield block, dy, dx, ty, tx


def transposed_to_phases(kernel: np.ndarray) -> np.ndarray:
    """A transposed convolution's kernel ``(inputs, outputs, 3, 3)`` as the 2x2 phase
    convolution's ``(4 * outputs, inputs, 2, 2)`` (phase-major channels, as
    ``DepthToSpace`` in DCR mode reads them)."""
    outputs = kernel.shape[1]
    phases = np.zeros((4 * outputs, kernel.shape[0], 2, 2), dtype=np.float64)
    for block, dy, dx, ty, tx in _phase_taps(outputs):
        phases[block, :, dy, dx] = kernel[:, :, ty, tx].T
    return phases


def _is_foldable_batch_norm(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    """An inference batch norm whose scale, shift, mean and variance are constants."""
    return (
        node.op_type == "BatchNormalization"
        and len(node.output) == 1
        and not _attributes(node).get("training_mode", 0)
        and all(name in weights for name in node.input[1:5])
    )


def _drop_softmax(graph: onnx.GraphProto, heads: list[tuple[int, int]]) -> None:
    """The first output's softmax (one, or one per head joined by a Concat of Slices of
    one tensor) is dropped: the output is that tensor, renamed ``logits``."""
    output = graph.output[0]
    producer = {name: node for node in graph.node for name in node.output}
    last = producer.get(output.name)
    if last is None:
        raise LungsegError(f"{output.name}: no node gives the network's first output")
    if last.op_type == "Softmax":
        logits = last.input[0]
    elif last.op_type == "Concat" and all(
        producer.get(name) is not None and producer[name].op_type == "Softmax"
        for name in last.input
    ):
        sliced = [producer.get(producer[name].input[0]) for name in last.input]
        sources = {node.input[0] for node in sliced if node is not None and node.op_type == "Slice"}
        if len(sources) != 1 or len(sliced) != len(heads) or None in sliced:
            raise LungsegError("the network's heads are not softmaxes of slices of one tensor")
        logits = sources.pop()
    else:
        raise LungsegError(f"{output.name}: not a softmax output ({last.op_type})")
    nodes = [node for node in graph.node if node is not last]
    nodes.append(helper.make_node("Identity", [logits], [LOGITS_NAME], name="logits"))
    _replace_nodes(graph, nodes)
    output.name = LOGITS_NAME


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Nodes whose outputs nothing reads, and initializers no node reads."""
    wanted = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(name in wanted for name in node.output):
            kept.append(node)
            wanted.update(node.input)
    _replace_nodes(graph, kept[::-1])
    used = [tensor for tensor in graph.initializer if tensor.name in wanted]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _check_same_function(source: Path, target: Path, heads: list[tuple[int, int]]) -> None:
    """The rewritten graph's logits, through a softmax per head, equal the original's
    probabilities, and every other output equals the original's (float rounding)."""
    import onnxruntime

    def run(path: Path) -> list[np.ndarray]:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        images = np.random.default_rng(0).random((2, *session.get_inputs()[0].shape[1:]))
        return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})

    before, after = run(source), run(target)
    logits = after[0].astype(np.float64)
    probabilities = np.concatenate(
        [_softmax(logits[:, a:b]) for a, b in heads] if heads else [_softmax(logits)], axis=1
    )
    differences = [np.abs(probabilities - before[0]).max()] + [
        np.abs(x - y).max() for x, y in zip(before[1:], after[1:], strict=True)
    ]
    if max(differences) > 1e-4:
        raise LungsegError(
            f"{target}: the rewritten graph differs from {source} by {max(differences):.2g}"
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
