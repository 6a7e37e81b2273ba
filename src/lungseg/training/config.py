"""One typed training configuration, saved as config.json next to every run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lungseg.errors import LungsegError

DEFAULT_RENDERINGS: dict[str, float] = {
    "hu": 0.2,
    "lung_window": 0.2,
    "soft_tissue": 0.12,
    "bone_or_wide": 0.08,
    "min_max_padded": 0.1,
    "min_max": 0.1,
    "clahe": 0.12,
    "equalised": 0.08,
}
"""How often each rendering of a HU slice is drawn (``training.augment.HU_RENDERINGS``;
``hu`` keeps the HU as DICOM input does)."""


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentation (see ``training.augment``).

    Attributes:
        renderings: weight of each rendering of HU slices (normalised to sum 1).
        display_rendering: probability of CLAHE, equalisation or a min-max stretch on
            top of an 8-bit source slice.
        gamma: probability of a gamma curve in 0.6..1.6 on a rendered picture.
        jpeg: probability of JPEG compression at quality 20..95 of a rendered picture.
        crop: probability of a tight crop (65-100 % of each side).
        dihedral: apply one of the 8 flips/quarter turns (uniformly) with this probability.
        affine: probability of a random rotation/zoom/shift.
        rotate_deg: largest rotation in degrees.
        zoom: (smallest, largest) scale of the sampling grid.
        shift: largest shift as a share of the side.
        noise: probability of Gaussian noise (std up to 0.03 of the range).
    """

    renderings: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RENDERINGS))
    display_rendering: float = 0.4
    gamma: float = 0.3
    jpeg: float = 0.4
    crop: float = 0.2
    dihedral: float = 0.75
    affine: float = 0.7
    rotate_deg: float = 15.0
    zoom: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.08
    noise: float = 0.2


@dataclass
class TrainConfig:
    """Everything that decides a training run.

    Attributes:
        task: ``lung``, ``infection``, ``infection-all`` or ``lung+infection`` (``core.tasks``).
        image_size: model input side in pixels (slices are padded square and resized).
        architecture: ``unet``, or for a task with a lung and an infection head
            ``unet-two-decoders`` (one encoder, a decoder per head)
            (``training.model.create_model``); named in the model card.
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
        max_slices_per_patient: train and validate on at most this many slices of one patient, evenly
            spaced (neighbouring slices of a volume are near copies); 0 keeps all.
        augment: augmentation settings.
        infection_weight: weight of the infection head's loss against the lungs' (a task
            with both heads).
        init_from: a checkpoint (``checkpoints/best.ckpt`` of an earlier run) whose weights
            start this network (``training.model.start_from``); empty: random weights.
            With two decoders it starts the encoder and the lung decoder.
        init_infection_from: with two decoders, a checkpoint of an infection run whose
            decoder starts the infection decoder.
        infection_class_dice: weight of a soft Dice loss per typed infection class
            (``training.module.infection_loss``); 0: none.
        monitor: the validation figure that picks the checkpoint and stops early:
            ``val_dice`` (the lungs, or the task's foreground) or ``val_score`` (for a
            task with both heads, the mean of the lungs' and the infection's Dice).
    """

    task: str = "lung"
    image_size: int = 256
    architecture: str = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 72
    patience: int = 25
    max_minutes: float = 55.0
    seed: int = 0
    num_workers: int = 1
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    include_flagged: bool = False
    max_slices_per_patient: int = 50
    infection_weight: float = 1.0
    infection_class_dice: float = 0.0
    monitor: str = "val_dice"
    init_from: str = ""
    init_infection_from: str = ""
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
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        if "zoom" in augment:
            augment["zoom"] = tuple(augment["zoom"])
        return cls(**values, augment=AugmentConfig(**augment))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise LungsegError(f"{path}: cannot read training config: {error}") from error
