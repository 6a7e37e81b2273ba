"""Inference: pre-processing, the ONNX model, post-processing and the Predictor."""

from __future__ import annotations

from lungseg.inference.encode import write_prediction as save_prediction
from lungseg.inference.predictor import Predictor
from lungseg.inference.result import Prediction

__all__ = ["Prediction", "Predictor", "save_prediction"]
