"""8-bit integer models: the exported network with 8-bit weights and activations, for
speed on a CPU (onnxruntime's QDQ format; integer convolutions where the processor has
them).

Weights are quantised per output channel, symmetrically (int8). onnxruntime
multiplies uint8 activations by int8 weights with an instruction (``vpmaddubsw``)
that adds two products into 16 bits and saturates on x86 processors without VNNI
(AVX2 only: AMD before Zen 4, Intel laptop and desktop chips before Ice Lake): with
8-bit weights, 255 x 127 x 2 is over 32767, and on such a machine the models shipped
before decided 8 % of lung pixels unlike their own arithmetic. Two ways out, each
exact on every processor (``WEIGHT_FORMATS``): the weights quantised again in 7 bits
(``seven_bit_weights``: 255 x 64 x 2 < 32768, the same fast kernel, each weight
rounded once more), or the 8-bit values stored as uint8 (``unsigned_weights``: the
very same values, a quarter to a third slower where VNNI is missing;
``benchmarks/int8_kernels.py``). New models get 7 bits; of the shipped ones, the
one-pass network has 7 bits and the lung network keeps its 8-bit values, chosen by
``make evaluate`` (docs/training.md). The activations' ranges come from
calibration slices: training slices as users send them (HU slices through the
renderings people export, 8-bit slices as stored), so the ranges cover every input
the model was trained for. ``lungseg train`` writes ``model_int8.onnx`` with its card
beside ``model.onnx``; ``lungseg quantize RUN`` does it for an earlier run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.config import TrainConfig
from lungseg.training.data import SliceDataset, prepare_split
from lungseg.training.export import INPUT_NAME
from lungseg.training.fast_graph import LOGITS_NAME, rewrite_for_int8

CALIBRATION_SLICES = 96
INT8_NAME = "model_int8.onnx"


def calibration_inputs(
    dataset: BuiltDataset, config: TrainConfig, count: int = CALIBRATION_SLICES
) -> np.ndarray:
    """``count`` model inputs ``(count, 1, S, S)`` from the train split, spread over it,
    HU slices shown through the renderings in turn."""
    slices = prepare_split(
        dataset, "train", task=config.task, max_slices_per_patient=config.max_slices_per_patient
    )
    picks = np.linspace(0, len(slices) - 1, min(count, len(slices))).round().astype(int)
    chosen = [slices[i] for i in sorted(set(picks.tolist()))]
    view = SliceDataset(chosen, Preprocessing(size=config.image_size), rendered=True)
    return np.stack([view.model_input(i)[0][None] for i in range(len(view))]).astype(np.float32)


def quantize_onnx(
    source: Path,
    target: Path,
    calibration: np.ndarray,
    heads: list[tuple[int, int]] | None = None,
) -> Path:
    """Write ``source`` (an export with a softmax per head, ``heads``: their channels;
    none: one softmax) as an int8 QDQ model to ``target`` (aside, then renamed), first
    rewritten for integer kernels (``training.fast_graph``: it gives logits)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    partial = target.with_name(target.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="lungseg-quantize-") as scratch:
        rewritten = rewrite_for_int8(source, Path(scratch) / "rewritten.onnx", heads or [])
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(rewritten), str(prepared))
        quantize_static(
            str(prepared),
            str(partial),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    seven_bit_weights(partial, partial)
    partial.replace(target)
    return target


UNSIGNED_ZERO_POINT = 128


def unsigned_weights(source: Path, target: Path) -> int:
    """Write the QDQ model ``source`` to ``target`` with every int8 weight (a constant
    that a DequantizeLinear reads, zero point 0 as ``quantize_static`` makes them)
    stored as uint8 with zero point 128: the same dequantised values, run by
    onnxruntime's uint8 x uint8 kernels, which do not saturate (module docstring).
    Returns how many weights were changed (0: nothing was int8; ``target`` is written
    anyway)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        weights = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weights is None or weights.data_type != onnx.TensorProto.INT8:
            continue
        if len(node.input) < 3 or node.input[2] not in constants:
            raise LungsegError(f"{source}: int8 weights {weights.name} without a zero point")
        zero = constants[node.input[2]]
        for tensor in (weights, zero):
            shifted = numpy_helper.to_array(tensor).astype(np.int16) + UNSIGNED_ZERO_POINT
            tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), tensor.name))
        changed += 1
    partial = target.with_name(target.name + ".unsigned-partial")
    onnx.save(model, str(partial))
    partial.replace(target)
    return changed


WEIGHT_LEVELS = 63
"""Weights in 7 bits: int8 in [-64, 63], the largest of each output channel at 63."""


def seven_bit_weights(source: Path, target: Path) -> int:
    """Write the QDQ model ``source`` to ``target`` with each convolution's (and
    Gemm's) 8-bit weights quantised again to 7 bits per output channel, and its
    int32 bias to the matching scale (input scale x weight scale, which onnxruntime's
    fused integer convolution requires), so the products never saturate (module
    docstring). Weights stored as int8 (zero point 0) or as uint8 (zero point 128)
    are taken. Returns how many weights were changed (0: all were 7-bit already;
    ``target`` is written anyway)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
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
            raise LungsegError(f"{source}: weights {quantised[0].name} are not symmetric 8-bit")
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
    partial = target.with_name(target.name + ".7bit-partial")
    onnx.save(model, str(partial))
    partial.replace(target)
    return changed


WEIGHT_FORMATS = {
    "seven-bit": (
        seven_bit_weights,
        "onnxruntime QDQ, int8 weights in 7 bits per output channel (no saturation on "
        "processors without VNNI), uint8 activations",
    ),
    "unsigned": (
        unsigned_weights,
        "onnxruntime QDQ, 8-bit weights per output channel stored as uint8 with zero "
        "point 128 (no saturation on processors without VNNI), uint8 activations",
    ),
}
"""How an 8-bit model's weights are made safe on every processor, and what its card says."""
DEFAULT_WEIGHTS = "seven-bit"


def convert_weights(model: Path, weights: str = DEFAULT_WEIGHTS) -> int:
    """An 8-bit model's weights made safe in place (a shipped one) as ``WEIGHT_FORMATS``
    names, its card (``<stem>.json`` beside it) given the new file's hash and format.
    Returns the weights changed."""
    if weights not in WEIGHT_FORMATS:
        raise LungsegError(f"weights {weights!r}: one of {', '.join(WEIGHT_FORMATS)}")
    convert, description = WEIGHT_FORMATS[weights]
    changed = convert(model, model)
    card_path = model.with_suffix(".json")
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        onnx_card = card.setdefault("onnx", {})
        onnx_card["sha256"] = sha256_of(model)
        quantization = onnx_card.setdefault("quantization", {})
        quantization["format"] = description
        if changed:
            quantization["weights_converted"] = (
                f"{weights} by lungseg quantize (training.quantize.convert_weights); the "
                "figures above were measured on the model before"
            )
        card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return changed


def decision_agreement(first: Path, second: Path, inputs: np.ndarray) -> float:
    """Share of pixels where two models' decisions (argmax per head) agree on ``inputs``."""
    from lungseg.inference.model import SegmentationModel

    a, b = SegmentationModel(first), SegmentationModel(second)
    pa, pb = a.scores(inputs[:, 0]), b.scores(inputs[:, 0])
    same = [
        (pa[:, start:stop].argmax(1) == pb[:, start:stop].argmax(1)).mean()
        for start, stop in a.heads.values()
    ]
    return float(np.mean(same))


def quantize_run(run: Path, data: Path, calibration_slices: int = CALIBRATION_SLICES) -> Path:
    """``model_int8.onnx`` and its card ``model_int8.json`` for a run folder of
    ``lungseg train``, calibrated on ``data`` (the dataset it was trained on)."""
    source = run / "model.onnx"
    if not source.is_file() or not (run / "config.json").is_file():
        raise LungsegError(f"{run}: not a lungseg training run (no model.onnx and config.json)")
    config = TrainConfig.load(run / "config.json")
    inputs = calibration_inputs(BuiltDataset(data), config, calibration_slices)
    card: dict[str, Any] = json.loads((run / "model_card.json").read_text())
    heads = sorted((int(a), int(b)) for a, b in card["output"].get("heads", {}).values())
    target = quantize_onnx(source, run / INT8_NAME, inputs, heads)
    card["output"]["name"] = LOGITS_NAME
    card["output"]["values"] = (
        "logits: the argmax per head is the decision; a softmax per head gives the "
        "probabilities (model.onnx gives those)"
    )
    card["onnx"] = {
        "file": target.name,
        "sha256": sha256_of(target),
        "quantization": {
            "format": WEIGHT_FORMATS[DEFAULT_WEIGHTS][1],
            "calibration": f"{len(inputs)} training slices of {data}, HU ones through the "
            "exported renderings in turn",
            "decisions_equal_to_float_model": round(decision_agreement(source, target, inputs), 5),
            "float_model_sha256": sha256_of(source),
        },
    }
    (run / "model_int8.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    return target
