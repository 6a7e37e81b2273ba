from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_medseg_like

from lungseg.cli import main
from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.dataset.store import BuiltDataset
from lungseg.evaluation.infection import binary_scores
from lungseg.training.config import AugmentConfig, TrainConfig
from lungseg.training.tasks import get_task
from lungseg.training.train import train


@pytest.fixture(scope="module")
def medseg_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infection")
    source = write_medseg_like(root / "medseg", count=10, size=64)
    # slices.csv marks medseg_000 as the source's test slice, the rest as train.
    build_dataset(BuildConfig(sources=[str(source)], fractions=(0.6, 0.2, 0.2)), root / "dataset")
    return root / "dataset"


def test_infection_splits_follow_the_sources_own_test_split(medseg_dataset: Path) -> None:
    dataset = BuiltDataset(medseg_dataset)
    task = get_task("infection")
    test = task.rows(dataset, "test", False)
    assert [r["source_split"] for r in test] == ["test"]
    train, val = task.rows(dataset, "train", False), task.rows(dataset, "val", False)
    assert {r["source_split"] for r in train + val} == {"train"}
    assert not {r["slice_id"] for r in train} & {r["slice_id"] for r in val}
    assert len(train) + len(val) + len(test) == 10


def test_infection_model_trains_exports_and_evaluates(
    medseg_dataset: Path, tmp_path: Path, capsys
) -> None:
    config = TrainConfig(
        task="infection",
        image_size=32,
        channels=(4, 8, 16),
        num_res_units=0,
        batch_size=4,
        max_epochs=2,
        max_minutes=0,
        num_workers=0,
        augment=AugmentConfig(dihedral=1.0, affine=0.5, jpeg=0, gamma=0, noise=0),
    )
    result = train(config, medseg_dataset, tmp_path / "run")
    assert result.onnx_max_difference < 1e-4
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["task"] == "infection"
    assert card["output"]["classes"] == [
        "background",
        "ground_glass",
        "consolidation",
        "pleural_effusion",
    ]
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "run" / "model.onnx"),
            "--data",
            str(medseg_dataset),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    assert "infection on 1 slices" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "infection_summary.json").read_text())
    assert 0.0 <= summary["infection"]["dice"] <= 1.0
    assert (tmp_path / "eval" / "infection_report.md").exists()


def test_binary_scores_on_hand_made_masks() -> None:
    truth = np.zeros((10, 10), bool)
    truth[:4, :5] = True  # 20 pixels
    predicted = np.zeros((10, 10), bool)
    predicted[:4, :4] = True  # 16 right, 4 missed
    predicted[9, 9] = True  # 1 false
    scores = binary_scores(predicted, truth)
    assert scores["dice"] == pytest.approx(32 / 37)
    assert scores["sensitivity"] == pytest.approx(16 / 20)
    assert scores["specificity"] == pytest.approx(79 / 80)
    empty = binary_scores(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert empty["dice"] == 1.0 and math.isnan(empty["sensitivity"])
