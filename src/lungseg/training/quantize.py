"""8-bit integer models: the exported network with 8-bit weights and activations, for
speed on a CPU (onnxruntime's QDQ format; integer convolutions where the processor has
them).

Weights are quantised per output channel, symmetrically, then made safe on
processors without VNNI (``training.weights``: 7 bits for new models;
``WEIGHT_FORMATS``). The activations' ranges come from
calibration slices: training slices as users send them (HU slices through the
renderings people export, 8-bit slices as stored), so the ranges cover every input
the model was trained for. ``lungseg train`` writes ``model_int8.onnx`` with its card
beside ``model.onnx``; ``lungseg quantize RUN`` does it for an earlier run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.inference.card import CARD_NAME, ModelCard
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.config import TrainConfig
from lungseg.training.data import SliceDataset, prepare_split
from lungseg.training.export import INPUT_NAME
from lungseg.training.fast_graph import LOGITS_NAME, rewrite_for_int8
from lungseg.training.weights import DEFAULT_WEIGHTS, WEIGHT_FORMATS

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
    weights: str = DEFAULT_WEIGHTS,
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
    WEIGHT_FORMATS[weights][0](partial, partial)  # safe on processors without VNNI
    partial.replace(target)
    return target


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


def quantize_run(
    run: Path,
    data: Path,
    calibration_slices: int = CALIBRATION_SLICES,
    weights: str = DEFAULT_WEIGHTS,
) -> Path:
    """``model_int8.onnx`` and its card ``model_int8.json`` for a run folder of
    ``lungseg train``, calibrated on ``data`` (the dataset it was trained on), its
    weights made safe as ``WEIGHT_FORMATS[weights]``."""
    if weights not in WEIGHT_FORMATS:
        raise LungsegError(f"weights {weights!r}: one of {', '.join(WEIGHT_FORMATS)}")
    source = run / "model.onnx"
    if not source.is_file() or not (run / "config.json").is_file():
        raise LungsegError(f"{run}: not a lungseg training run (no model.onnx and config.json)")
    config = TrainConfig.load(run / "config.json")
    inputs = calibration_inputs(BuiltDataset(data), config, calibration_slices)
    card = ModelCard.load(run / CARD_NAME)
    target = quantize_onnx(source, run / INT8_NAME, inputs, sorted(card.heads.values()), weights)
    card.but(
        output_name=LOGITS_NAME,
        output_values="logits: the argmax per head is the decision; a softmax per head gives "
        "the probabilities (model.onnx gives those)",
        onnx={
            "file": target.name,
            "sha256": sha256_of(target),
            "quantization": {
                "format": WEIGHT_FORMATS[weights][1],
                "calibration": f"{len(inputs)} training slices of {data}, HU ones through the "
                "exported renderings in turn",
                "decisions_equal_to_float_model": round(
                    decision_agreement(source, target, inputs), 5
                ),
                "float_model_sha256": sha256_of(source),
            },
        },
    ).write(run / "model_int8.json")
    return target
