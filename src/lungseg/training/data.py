"""Slices of a built dataset, ready for the model: the one pre-processing, plus augmentation.

Slices stay at their source size in their own units (HU or 8-bit display), so
that every epoch can render them anew the ways exporters do; the model square is
made by the same ``Preprocessing.prepare`` call inference makes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from lungseg.dataset.store import BuiltDataset, ManifestRow
from lungseg.dataset.tasks import get_task
from lungseg.errors import DatasetError
from lungseg.imaging import Intensity
from lungseg.imaging.orientation import apply_dihedral
from lungseg.imaging.render import RENDERINGS, render_hu
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.augment import Augmenter, prepare_pair


@dataclass(frozen=True)
class PreparedSlice:
    """A stored slice at its own size, in its own units, with its task labels."""

    image: np.ndarray  # (rows, cols) int16 HU or uint8 display
    intensity: Intensity
    labels: np.ndarray  # (rows, cols) uint8 class indices of the task
    slice_id: str
    patient: str


def prepare_split(
    dataset: BuiltDataset,
    split: str,
    *,
    include_flagged: bool = False,
    task: str = "lung",
    max_slices_per_patient: int = 0,
) -> list[PreparedSlice]:
    """Load every slice of a task's split with its labels.

    Args:
        max_slices_per_patient: keep at most this many slices of one patient, evenly
            spaced in their stored order (0 keeps all).
    """
    chosen = get_task(task)
    rows = chosen.rows(dataset, split, include_flagged)
    if not rows:
        raise DatasetError(f"{dataset.folder}: the {split} split has no slices for the {task} task")
    if max_slices_per_patient > 0:
        rows = spread_per_patient(rows, max_slices_per_patient)
    prepared = []
    for row in tqdm(rows, desc=f"loading {split}", unit="slice", leave=False):
        record = dataset.load(row)
        prepared.append(
            PreparedSlice(
                record.image,
                record.intensity,
                chosen.labels(record),
                row.slice_id,
                f"{row.source}/{row.patient}",
            )
        )
    return prepared


def spread_per_patient(rows: list[ManifestRow], limit: int) -> list[ManifestRow]:
    """At most ``limit`` rows of each patient (per source), evenly spaced, order kept."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[(row.source, row.patient)].append(index)
    keep: set[int] = set()
    for indices in groups.values():
        if len(indices) <= limit:
            keep.update(indices)
        else:
            picks = np.linspace(0, len(indices) - 1, limit).round().astype(int)
            keep.update(indices[i] for i in picks)
    return [row for index, row in enumerate(rows) if index in keep]


VALIDATION_RENDERINGS = (None, *RENDERINGS)
"""Validation shows HU slices as read (``None``) and through every named exporter, in
turn by index, so the best checkpoint is the one right on what users upload."""


class SliceDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Torch view of slices: ``(1, S, S)`` float model input and ``(1, S, S)`` long labels.

    Args:
        slices: the loaded slices.
        preprocessing: the model's input contract.
        augmenter: random augmentation (training); ``None`` for the deterministic path.
        rendered: without an augmenter, show HU slice ``i`` through
            ``VALIDATION_RENDERINGS[i % 9]`` (validation).
    """

    def __init__(
        self,
        slices: list[PreparedSlice],
        preprocessing: Preprocessing,
        augmenter: Augmenter | None = None,
        *,
        rendered: bool = False,
    ) -> None:
        self.slices = slices
        self.preprocessing = preprocessing
        self.augmenter = augmenter
        self.rendered = rendered

    def __len__(self) -> int:
        return len(self.slices)

    def model_input(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(size, size)`` input and labels of slice ``index``, without torch."""
        item = self.slices[index]
        if self.augmenter is not None:
            return self.augmenter(item.image, item.intensity, item.labels)
        image, intensity, labels = item.image, item.intensity, item.labels
        rendering = VALIDATION_RENDERINGS[index % len(VALIDATION_RENDERINGS)]
        if self.rendered and rendering is not None and intensity is Intensity.HU:
            exporter = RENDERINGS[rendering]
            image = render_hu(image, exporter, as_jpeg=False)
            labels = apply_dihedral(labels, exporter.turns, exporter.flip)
            intensity = Intensity.DISPLAY
        return prepare_pair(self.preprocessing, image, intensity, labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.model_input(index)
        return (
            torch.from_numpy(np.array(image, dtype=np.float32))[None],
            torch.from_numpy(np.array(labels, dtype=np.int64))[None],
        )
