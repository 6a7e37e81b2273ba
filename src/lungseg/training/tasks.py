"""What a model learns: lungs (background, right lung, left lung) or infection (4 MedSeg classes).

A task says which manifest rows it trains and tests on, how a stored slice
becomes class labels, and which classes the monitored Dice counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lungseg.dataset.labels import CONSOLIDATION, GROUND_GLASS, LUNG_LEFT, LUNG_RIGHT
from lungseg.dataset.store import BuiltDataset, SliceRecord
from lungseg.errors import LungsegError
from lungseg.inference.postprocess import reference_sides


@dataclass(frozen=True)
class Task:
    """A segmentation task.

    Attributes:
        name: ``lung`` or ``infection``.
        classes: output channel names, background first.
        foreground: class indices the monitored Dice (``val_dice``) counts as one.
        rows: the manifest rows of a split (``train``, ``val``, ``test``).
        labels: class indices ``(rows, cols)`` uint8 of a stored slice.
    """

    name: str
    classes: tuple[str, ...]
    foreground: tuple[int, ...]
    rows: Callable[[BuiltDataset, str, bool], list[dict[str, str]]]
    labels: Callable[[SliceRecord], np.ndarray]


def _lung_rows(dataset: BuiltDataset, split: str, include_flagged: bool) -> list[dict[str, str]]:
    return dataset.select(split, include_flagged=include_flagged)


def _infection_rows(
    dataset: BuiltDataset, split: str, include_flagged: bool
) -> list[dict[str, str]]:
    """Slices with typed infection labels (MedSeg). Test is the source's own split
    (``infnet_split``, the one published results use); validation is the build's
    val split of the source's training slices; train is the rest of them."""
    typed = [
        r
        for r in dataset.select(None, include_flagged=include_flagged)
        if r["infection_labels"] == "typed" and r["source_split"] in ("train", "test")
    ]
    if split == "test":
        return [r for r in typed if r["source_split"] == "test"]
    trainable = [r for r in typed if r["source_split"] == "train"]
    if split == "val":
        return [r for r in trainable if r["split"] == "val"]
    return [r for r in trainable if r["split"] != "val"]


TASKS: dict[str, Task] = {
    "lung": Task(
        "lung",
        ("background", "right_lung", "left_lung"),
        (LUNG_RIGHT, LUNG_LEFT),
        _lung_rows,
        lambda r: reference_sides(r.lung),
    ),
    "infection": Task(
        "infection",
        ("background", "ground_glass", "consolidation", "pleural_effusion"),
        (GROUND_GLASS, CONSOLIDATION),
        _infection_rows,
        lambda r: r.infection.astype(np.uint8),
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise LungsegError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
