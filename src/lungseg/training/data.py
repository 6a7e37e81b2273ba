"""Slices of a built dataset, ready for the model: padded square, resized, augmented."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from lungseg.dataset.store import BuiltDataset
from lungseg.errors import DatasetError
from lungseg.imaging import Intensity, to_unit_range
from lungseg.inference.preprocess import pad_value, to_model_square
from lungseg.training.augment import Augmenter
from lungseg.training.tasks import get_task


@dataclass(frozen=True)
class PreparedSlice:
    """A slice at model size, in its own units (HU or display) so augmentation can re-window."""

    raw: np.ndarray  # (size, size) float32
    intensity: Intensity
    lung: np.ndarray  # (size, size) uint8 class indices of the task (lung: 0/1)
    slice_id: str


def prepare_split(
    dataset: BuiltDataset,
    split: str,
    size: int,
    *,
    include_flagged: bool = False,
    task: str = "lung",
) -> list[PreparedSlice]:
    """Load every slice of a task's split and bring it to ``size`` x ``size``."""
    chosen = get_task(task)
    rows = chosen.rows(dataset, split, include_flagged)
    if not rows:
        raise DatasetError(f"{dataset.folder}: the {split} split has no slices for the {task} task")
    prepared = []
    for row in tqdm(rows, desc=f"loading {split}", unit="slice", leave=False):
        record = dataset.load(row)
        raw, _ = to_model_square(
            record.image.astype(np.float32), size, fill=pad_value(record.intensity)
        )
        labels, _ = to_model_square(chosen.labels(record), size, nearest=True)
        prepared.append(PreparedSlice(raw, record.intensity, labels, row["slice_id"]))
    return prepared


class SliceDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Torch view of prepared slices: ``(1, S, S)`` float image in [0, 1] and long label."""

    def __init__(self, slices: list[PreparedSlice], augmenter: Augmenter | None = None) -> None:
        self.slices = slices
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.slices[index]
        if self.augmenter is not None:
            image, lung = self.augmenter(item.raw, item.intensity, item.lung)
        else:
            image, lung = to_unit_range(item.raw, item.intensity), item.lung
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
            torch.from_numpy(np.ascontiguousarray(lung, dtype=np.int64))[None],
        )
