"""What a model learns: lungs (background, right lung, left lung), infection (4 MedSeg
classes), or both in one network (``lung+infection``: two heads, one pass).

A task says which manifest rows it trains and tests on, how a stored slice
becomes class labels, and which classes the monitored Dice counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lungseg.dataset.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    INFECTION_UNTYPED,
    LUNG_LEFT,
    LUNG_RIGHT,
)
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
        labels: class indices ``(rows, cols)`` uint8 of a stored slice (for a task with
            heads, the joint code of ``joint_code``).
        heads: output channels ``[start, stop)`` of each head, where the network has
            several (each head is a softmax of its own).
    """

    name: str
    classes: tuple[str, ...]
    foreground: tuple[int, ...]
    rows: Callable[[BuiltDataset, str, bool], list[dict[str, str]]]
    labels: Callable[[SliceRecord], np.ndarray]
    heads: dict[str, tuple[int, int]] | None = None


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


# The joint task's infection targets. A source that types lesions (MedSeg) supervises
# each class; one that labels infection as one class (COVID-19-CT-Seg) supervises only
# "ground glass or consolidation" against "neither"; a source without infection
# labels supervises nothing there (it is not taken as free of infection).
IS_INFECTION, NOT_INFECTION, UNKNOWN = 4, 5, 6
"""Infection targets beside the typed classes 0 none, 1 ground glass, 2 consolidation, 3 effusion."""
LUNG_CODES = 3
"""Lung labels 0..2; the joint code of a pixel is ``lung + LUNG_CODES * infection target``."""


def joint_code(lung: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One uint8 plane that carries both labels through the same flips and resizes."""
    return (lung.astype(np.uint8) + LUNG_CODES * target.astype(np.uint8)).astype(np.uint8)


def split_code(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``joint_code``'s inverse: (lung labels, infection targets)."""
    return code % LUNG_CODES, code // LUNG_CODES


def _infection_target(record: SliceRecord) -> np.ndarray:
    """A slice's infection targets. MedSeg's published infection test slices
    (``source_split`` test) give none: the lungs may learn from them (as the lung
    model's do), the infection head never sees their lesion labels."""
    scheme = record.row.get("infection_labels", "none")
    if scheme == "typed" and record.row.get("source_split") != "test":
        return record.infection.astype(np.uint8)
    if scheme == "binary":
        return np.where(record.infection == INFECTION_UNTYPED, IS_INFECTION, NOT_INFECTION).astype(
            np.uint8
        )
    return np.full(record.infection.shape, UNKNOWN, np.uint8)


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
    "lung+infection": Task(
        "lung+infection",
        (
            "background",
            "right_lung",
            "left_lung",
            "no_infection",
            "ground_glass",
            "consolidation",
            "pleural_effusion",
        ),
        (LUNG_RIGHT, LUNG_LEFT),
        _lung_rows,
        lambda r: joint_code(reference_sides(r.lung), _infection_target(r)),
        heads={"lung": (0, 3), "infection": (3, 7)},
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise LungsegError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
