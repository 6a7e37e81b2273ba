"""The stand-in lung model most inference tests segment with (``tests/models.py``), and a
Predictor on it: one of each per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from models import dark_is_lung_onnx

from lungseg.inference import Predictor


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dark_is_lung_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def predictor(model: Path) -> Predictor:
    return Predictor(model)
