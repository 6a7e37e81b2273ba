from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_medseg_like

from lungseg.cli import main
from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.dataset.store import BuiltDataset
from lungseg.dataset.tasks import get_task
from lungseg.errors import LungsegError
from lungseg.evaluation.infection import binary_scores
from lungseg.training.config import AugmentConfig, TrainConfig
from lungseg.training.train import train


@pytest.fixture(scope="module")
def medseg_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infection")
    source = write_medseg_like(root / "medseg", count=10, size=64)
    # slices.csv marks medseg_000 as the source's test slice, the rest as train.
    build_dataset(BuildConfig(sources=[str(source)], fractions=(0.6, 0.2, 0.2)), root / "dataset")
    return root / "dataset"


def _tiny_config(task: str) -> TrainConfig:
    """Seconds of training on 32 px slices."""
    return TrainConfig(
        task=task,
        image_size=32,
        channels=(4, 8, 16),
        num_res_units=0,
        batch_size=4,
        max_epochs=2,
        max_minutes=0,
        num_workers=0,
        augment=AugmentConfig(dihedral=1.0, affine=0.5, jpeg=0, gamma=0, noise=0),
    )


def test_infection_splits_follow_the_sources_own_test_split(medseg_dataset: Path) -> None:
    dataset = BuiltDataset(medseg_dataset)
    task = get_task("infection")
    test = task.rows(dataset, "test", False)
    assert [r.source_split for r in test] == ["test"]
    train, val = task.rows(dataset, "train", False), task.rows(dataset, "val", False)
    assert {r.source_split for r in train + val} == {"train"}
    assert not {r.slice_id for r in train} & {r.slice_id for r in val}
    assert len(train) + len(val) + len(test) == 10


@pytest.mark.slow
def test_infection_model_trains_exports_and_evaluates(
    medseg_dataset: Path, tmp_path: Path, capsys
) -> None:
    config = _tiny_config("infection")
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
    # a network of infection alone only starts the two-decoder network: neither predict
    # nor evaluate takes it, and evaluate says why
    assert code != 0
    assert "'infection' alone; lungseg evaluates the networks" in capsys.readouterr().err


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


def test_the_joint_loss_asks_only_what_each_source_knows() -> None:
    """Typed pixels pick their class; a binary positive only "ground glass or
    consolidation" (how it is split between the two is free); unknown pixels nothing."""
    import torch

    from lungseg.core.tasks import IS_INFECTION, UNKNOWN
    from lungseg.training.module import infection_loss

    torch.manual_seed(0)
    logits = torch.randn(1, 4, 4, 4)
    target = torch.full((1, 4, 4), UNKNOWN)
    target[0, :2] = IS_INFECTION
    target[0, 2, :2] = 2  # typed consolidation
    loss, _ = infection_loss(logits, target)
    unknown_changed = logits.clone()
    unknown_changed[0, :, 3] += torch.randn(4, 4) * 5  # row 3 is unknown
    assert torch.isclose(infection_loss(unknown_changed, target)[0], loss)
    # moving probability between ground glass and consolidation on a binary positive pixel
    probabilities = torch.softmax(logits, dim=1)
    swapped = probabilities.clone()
    swapped[0, 1, 0, 0], swapped[0, 2, 0, 0] = probabilities[0, 2, 0, 0], probabilities[0, 1, 0, 0]
    assert torch.isclose(infection_loss(swapped.log(), target)[0], loss, atol=1e-5)
    # ...but not on a typed pixel
    swapped = probabilities.clone()
    swapped[0, 1, 2, 0], swapped[0, 2, 2, 0] = probabilities[0, 2, 2, 0], probabilities[0, 1, 2, 0]
    assert not torch.isclose(infection_loss(swapped.log(), target)[0], loss, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["unet", "unet-two-decoders"])
def test_one_network_gives_lungs_and_infection_in_one_pass(
    medseg_dataset: Path, tmp_path: Path, architecture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthetic import ct_slice, display_slice, write_png

    from lungseg.core.tasks import IS_INFECTION, NOT_INFECTION, UNKNOWN, split_code
    from lungseg.inference import Predictor

    dataset = BuiltDataset(medseg_dataset)
    task = get_task("lung+infection")
    # the source's published infection test slices never give the infection head a label
    rows = task.rows(dataset, "train", False) + task.rows(dataset, "val", False)
    assert {r.source_split for r in rows} == {"train", "test"}
    for row in rows:
        lung, target = split_code(task.labels(dataset.load(row)))
        assert set(np.unique(lung)) <= {0, 1, 2}
        if row.source_split == "test":
            assert set(np.unique(target)) == {UNKNOWN}
        else:  # typed: each class, never the one-class targets
            assert set(np.unique(target)) <= {0, 1, 2, 3}
            assert IS_INFECTION not in target and NOT_INFECTION not in target
    config = replace(_tiny_config("lung+infection"), architecture=architecture)
    result = train(config, medseg_dataset, tmp_path / "run")
    assert result.onnx_max_difference < 1e-4
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["output"]["heads"] == {"lung": [0, 3], "infection": [3, 7]}
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert "val_infection_dice" in metrics and "val_score" in metrics
    predictor = Predictor(tmp_path / "run" / "model.onnx")
    assert predictor.infection_head
    # each head's probabilities sum to one: two softmaxes, not one over seven channels
    square = np.full((1, 1, 32, 32), 0.3, np.float32)
    probabilities = predictor.model.session.run(None, {predictor.model.input_name: square})[0]
    np.testing.assert_allclose(probabilities[:, :3].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities[:, 3:].sum(axis=1), 1.0, atol=1e-5)
    path = write_png(tmp_path / "s.png", display_slice(ct_slice(64)[0]))
    prediction = predictor.predict(path)
    assert prediction.infection is not None and prediction.involvement is not None
    assert prediction.infection.shape == prediction.lung.shape
    # evaluate scores both heads: the lungs' report and the infection's beside it
    out = tmp_path / "eval"
    args = ["--data", str(medseg_dataset), "--out", str(out), "--no-variants"]
    assert main(["evaluate", "--model", str(tmp_path / "run" / "model.onnx"), *args]) == 0
    assert (out / "report.md").exists() and (out / "infection" / "infection_report.md").exists()
    printed = capsys.readouterr().out
    assert re.search(r"infection, medseg\S*: \d+ slices, Dice \d\.\d{4}", printed), printed[-400:]
    summary = json.loads((out / "infection" / "infection_summary.json").read_text())
    assert summary["slices"] >= 1 and summary["lesion_mm2"] == 10.0  # scored as predict writes it


def test_lesions_found_and_false_positive_area() -> None:
    from lungseg.evaluation.infection import _lesions_found

    truth = np.zeros((40, 40), bool)
    truth[2:8, 2:8] = True  # 36 px = 36 mm² at 1 mm pixels: counts
    truth[20:30, 20:30] = True  # 100 px: counts, missed below
    truth[35, 35] = True  # 1 px: below 10 mm², not counted
    predicted = np.zeros_like(truth)
    predicted[5, 5] = True  # one pixel touches the first lesion: found
    assert _lesions_found(predicted, truth, 1.0) == {"lesions": 2, "lesions_found": 1}
    assert _lesions_found(predicted, truth, 0.3) == {"lesions": 2, "lesions_found": 1}
    assert _lesions_found(predicted, truth, 0.2) == {"lesions": 1, "lesions_found": 0}


@pytest.mark.slow
def test_infection_from_every_source_learns_from_both_kinds_of_labels(tmp_path: Path) -> None:
    """``infection-all``: MedSeg's typed slices (each TYPED_REPEATS times in train) and a
    one-class source's slices, whose targets say only lesion or not; the network has the
    infection head alone, and the Predictor uses it beside the shipped lung model."""
    from collections import Counter

    from synthetic import write_covid_kaggle_like

    from lungseg.core.tasks import IS_INFECTION, NOT_INFECTION
    from lungseg.dataset.tasks import TYPED_REPEATS
    from lungseg.inference import Predictor

    medseg = write_medseg_like(tmp_path / "medseg", count=10, size=64)
    covid = write_covid_kaggle_like(tmp_path / "covid", cases=4, slices=8)
    config = BuildConfig(sources=[str(medseg), str(covid)], fractions=(0.5, 0.25, 0.25))
    build_dataset(config, tmp_path / "dataset")
    dataset = BuiltDataset(tmp_path / "dataset")
    task = get_task("infection-all")
    rows = task.rows(dataset, "train", False)
    typed = get_task("infection").rows(dataset, "train", False)
    assert Counter(r.slice_id for r in rows if r.infection_labels == "typed") == {
        r.slice_id: TYPED_REPEATS for r in typed
    }
    binary = [r for r in rows if r.infection_labels == "binary"]
    assert binary and all(r.split == "train" for r in binary)
    targets = np.concatenate([task.labels(dataset.load(r)).ravel() for r in binary])
    assert set(np.unique(targets)) == {IS_INFECTION, NOT_INFECTION}

    result = train(_tiny_config("infection-all"), tmp_path / "dataset", tmp_path / "run")
    assert result.onnx_max_difference < 1e-4
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["task"] == "infection-all"
    assert card["output"]["heads"] == {"infection": [0, 4]}
    assert "val_infection_dice" in (tmp_path / "run" / "metrics.csv").read_text()
    # a network of infection alone starts the two-decoder network; lungseg predicts with
    # networks that find the lungs
    with pytest.raises(LungsegError, match="alone"):
        Predictor(tmp_path / "run" / "model.onnx")


def test_the_class_dice_weighs_a_rare_typed_class_as_much_as_ground_glass() -> None:
    """``infection_class_dice``: a slice of much ground glass and a little consolidation;
    calling the consolidation ground glass costs a few pixels' likelihood without it,
    and a whole class's Dice with it. One-class and unknown pixels add nothing to it."""
    import torch

    from lungseg.core.tasks import IS_INFECTION, UNKNOWN
    from lungseg.training.module import infection_loss

    target = torch.zeros((1, 16, 16), dtype=torch.long)
    target[0, :8] = 1  # ground glass, half the slice
    target[0, 8, :2] = 2  # two pixels of consolidation

    def confident(classes: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(classes, 4).permute(0, 3, 1, 2).float() * 8.0

    right = confident(target)
    wrong = target.clone()
    wrong[target == 2] = 1  # the consolidation called ground glass
    wrong_logits = confident(wrong)
    gap_without = infection_loss(wrong_logits, target)[0] - infection_loss(right, target)[0]
    gap_with = infection_loss(wrong_logits, target, 1.0)[0] - infection_loss(right, target, 1.0)[0]
    assert gap_without < 0.2 < gap_with  # about a third: one class of three lost
    # where nothing is typed, the class Dice adds nothing
    untyped = torch.full((1, 16, 16), UNKNOWN)
    untyped[0, :4] = IS_INFECTION
    logits = torch.randn(1, 4, 16, 16)
    assert torch.equal(infection_loss(logits, untyped, 1.0)[0], infection_loss(logits, untyped)[0])
