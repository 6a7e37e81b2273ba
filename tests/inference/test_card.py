"""The model card (inference.card): one typed shape, read and written in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lungseg.errors import LungsegError
from lungseg.inference.card import CARD_NAME, ModelCard
from lungseg.inference.model import SHIPPED_INFECTION_MODEL, SHIPPED_MODEL
from lungseg.inference.preprocess import Preprocessing


@pytest.mark.parametrize("model", [SHIPPED_MODEL, SHIPPED_INFECTION_MODEL], ids=lambda p: p.stem)
def test_a_shipped_card_reads_into_the_type_and_writes_back_the_same(
    model: Path, tmp_path: Path
) -> None:
    stored = json.loads(model.with_suffix(".json").read_text())
    card = ModelCard.read(model)
    assert card.preprocessing is not None and card.preprocessing.size == 256
    assert card.classes[:3] == ("background", "right_lung", "left_lung")
    assert card.safe_weights and card.sha256 == stored["onnx"]["sha256"]
    written = card.write(tmp_path / "card.json")
    assert json.loads(written.read_text()) == stored
    assert not list(tmp_path.glob(".*partial"))


def test_a_run_card_is_found_beside_the_model_and_defaults_stand_for_none(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    assert ModelCard.read(model) == ModelCard()  # no card: lungseg's first models
    ModelCard(task="infection", heads={"infection": (0, 4)}).write(tmp_path / CARD_NAME)
    card = ModelCard.read(model)
    assert card.task == "infection" and card.heads == {"infection": (0, 4)}
    changed = card.but(preprocessing=Preprocessing(size=128))
    assert changed.preprocessing == Preprocessing(size=128) and card.preprocessing is None


def test_a_broken_card_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"output": {"heads": {"lung": 3}}}')
    with pytest.raises(LungsegError, match=r"model\.json: cannot read the model card"):
        ModelCard.read(tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(LungsegError, match="cannot read the model card"):
        ModelCard.read(tmp_path / "model.onnx")
