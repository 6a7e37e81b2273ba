"""One typed training configuration, saved as config.json next to every run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lungseg.errors import LungsegError


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentation (see ``training.augment``).

    Attributes:
        dihedral: apply one of the 8 flips/quarter turns (uniformly) with this probability.
        affine: probability of a random rotation/zoom/shift.
        rotate_deg: largest rotation in degrees.
        zoom: (smallest, largest) scale; below 1 shows more field of view.
        shift: largest shift as a share of the side.
        window: probability of a random HU window instead of the lung window (HU slices).
        display_window: probability of a random re-windowing of 8-bit display slices
            (their exporters windowed them differently).
        quantise: probability of 8-bit quantisation (a PNG export).
        jpeg: probability of JPEG compression at quality 30..95.
        contrast: probability of a gamma change in 0.7..1.5.
        noise: probability of Gaussian noise (std up to 0.03 of the range).
    """

    dihedral: float = 0.75
    affine: float = 0.7
    rotate_deg: float = 15.0
    zoom: tuple[float, float] = (0.75, 1.25)
    shift: float = 0.08
    window: float = 0.3
    display_window: float = 0.0
    quantise: float = 0.3
    jpeg: float = 0.3
    contrast: float = 0.3
    noise: float = 0.2


@dataclass
class TrainConfig:
    """Everything that decides a training run.

    Attributes:
        task: ``lung`` or ``infection`` (``training.tasks``).
        image_size: model input side in pixels (slices are padded square and resized).
        architecture: a name in ``training.model.ARCHITECTURES``.
        channels: filters per U-Net level.
        num_res_units: residual units per level.
        batch_size, learning_rate, weight_decay: optimiser settings (AdamW, cosine schedule).
        max_epochs: upper bound; early stopping on validation Dice usually ends sooner.
        patience: epochs without a better validation Dice before stopping.
        max_minutes: wall-clock budget for training (0 = none).
        seed: seeds torch, numpy and the augmentation.
        num_workers: data loader processes.
        accelerator, devices, strategy, num_nodes: passed to Lightning's Trainer
            (``strategy="ddp"`` with several devices/nodes trains data-parallel).
        include_flagged: train on slices the dataset QC flagged too.
        augment: augmentation settings.
    """

    task: str = "lung"
    image_size: int = 256
    architecture: str = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 60
    patience: int = 20
    max_minutes: float = 42.0
    seed: int = 0
    num_workers: int = 1
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    include_flagged: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (a JSON file); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise LungsegError(f"unknown training settings: {', '.join(sorted(unknown))}")
        values = dict(values)
        augment = values.pop("augment", {})
        unknown = set(augment) - {f.name for f in fields(AugmentConfig)}
        if unknown:
            raise LungsegError(f"unknown augmentation settings: {', '.join(sorted(unknown))}")
        for key in ("channels",):
            if key in values:
                values[key] = tuple(values[key])
        if "zoom" in augment:
            augment["zoom"] = tuple(augment["zoom"])
        return cls(**values, augment=AugmentConfig(**augment))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise LungsegError(f"{path}: cannot read training config: {error}") from error
