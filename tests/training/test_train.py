from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from synthetic import ct_slice, write_finding_lungs_like, write_medseg_like

from lungseg.cli import main
from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.errors import LungsegError
from lungseg.imaging import Intensity
from lungseg.training.augment import Augmenter
from lungseg.training.config import AugmentConfig, TrainConfig
from lungseg.training.train import train

NO_AUGMENT = AugmentConfig(dihedral=0, affine=0, window=0, quantise=0, jpeg=0, contrast=0, noise=0)


def tiny_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "image_size": 32,
        "channels": (4, 8, 16),
        "num_res_units": 0,
        "batch_size": 4,
        "max_epochs": 6,
        "max_minutes": 0,
        "num_workers": 0,
        "learning_rate": 0.02,
        "augment": NO_AUGMENT,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    sources = [
        str(write_finding_lungs_like(root / "finding", count=10, size=64)),
        str(write_medseg_like(root / "medseg", count=6, size=64)),
    ]
    build_dataset(BuildConfig(sources=sources, fractions=(0.6, 0.2, 0.2)), root / "dataset")
    return root / "dataset"


def _epochs(metrics: Path, key: str) -> list[float]:
    with metrics.open() as handle:
        return [float(r[key]) for r in csv.DictReader(handle) if r.get(key)]


def test_training_runs_loss_falls_and_leaves_a_complete_run(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(tiny_config(), tiny_dataset, out)
    for name in (
        "config.json",
        "metrics.csv",
        "curves.png",
        "model.onnx",
        "model_card.json",
        "checkpoints/best.ckpt",
    ):
        assert (out / name).exists(), name
    losses = _epochs(out / "metrics.csv", "train_loss")
    assert len(losses) == 6
    assert min(losses[-2:]) < losses[0]
    assert result.onnx_max_difference < 1e-4
    card = json.loads((out / "model_card.json").read_text())
    assert card["input"]["shape"] == ["batch", 1, 32, 32]
    assert len(card["onnx"]["sha256"]) == 64
    assert TrainConfig.load(out / "config.json") == tiny_config()
    with pytest.raises(LungsegError, match="already holds a run"):
        train(tiny_config(), tiny_dataset, out)


def test_same_seed_same_numbers(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(max_epochs=2, augment=AugmentConfig())
    train(config, tiny_dataset, tmp_path / "a")
    train(config, tiny_dataset, tmp_path / "b")
    assert _epochs(tmp_path / "a" / "metrics.csv", "val_dice") == pytest.approx(
        _epochs(tmp_path / "b" / "metrics.csv", "val_dice"), abs=1e-4
    )


def test_config_round_trip_and_unknown_settings(tmp_path: Path) -> None:
    config = tiny_config()
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(LungsegError, match="unknown training settings: epochs"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(LungsegError, match="unknown augmentation settings"):
        TrainConfig.from_dict({"augment": {"flip": 1}})


def test_augmentation_keeps_image_and_mask_together() -> None:
    hu, labels = ct_slice(48)
    mask = (labels > 0).astype(np.uint8)
    augmenter = Augmenter(
        AugmentConfig(dihedral=1.0, affine=1.0, window=0, quantise=0, jpeg=0, contrast=0, noise=0),
        48,
        seed=3,
    )
    for _ in range(8):
        image, moved = augmenter(hu.astype(np.float32), Intensity.HU, mask)
        assert image.shape == moved.shape == (48, 48)
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert set(np.unique(moved)) <= {0, 1}
        lung_pixels = image[moved == 1]
        # Lungs (-850 HU = 0.27 in the window) stay under the mask after the same transform.
        assert np.median(lung_pixels) < 0.4


def test_augmentation_is_reproducible_and_covers_what_users_send() -> None:
    hu, labels = ct_slice(48)
    config = AugmentConfig(window=1.0, quantise=1.0, jpeg=1.0)
    first = Augmenter(config, 48, seed=5)(hu.astype(np.float32), Intensity.HU, labels)
    second = Augmenter(config, 48, seed=5)(hu.astype(np.float32), Intensity.HU, labels)
    np.testing.assert_array_equal(first[0], second[0])
    grey = (hu.astype(np.float32) + 1250) / 1500 * 255
    display, _ = Augmenter(NO_AUGMENT, 48)(np.clip(grey, 0, 255), Intensity.DISPLAY, labels)
    assert display.max() <= 1.0


def test_train_command(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(asdict(tiny_config(max_epochs=1))))
    code = main(
        [
            "train",
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(config),
        ]
    )
    assert code == 0
    assert "best validation Dice" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochz": 1}')
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "r2"),
                "--config",
                str(bad),
            ]
        )
        == 2
    )


def test_display_slices_can_be_rewindowed() -> None:
    hu, labels = ct_slice(48)
    grey = np.clip((hu.astype(np.float32) + 1250) / 1500 * 255, 0, 255)
    plain, _ = Augmenter(NO_AUGMENT, 48, seed=1)(grey, Intensity.DISPLAY, labels)
    config = AugmentConfig(
        dihedral=0, affine=0, window=0, quantise=0, jpeg=0, contrast=0, noise=0, display_window=1.0
    )
    rewindowed, mask = Augmenter(config, 48, seed=1)(grey, Intensity.DISPLAY, labels)
    assert not np.allclose(plain, rewindowed)
    assert rewindowed.min() >= 0.0 and rewindowed.max() <= 1.0
    np.testing.assert_array_equal(mask, labels)  # intensity only: the labels stay put
