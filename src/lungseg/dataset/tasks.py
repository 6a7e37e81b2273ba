"""Which slices of a built dataset a task trains and tests on, and how a stored slice
becomes its class labels. The tasks themselves (classes, heads, description) are
``lungseg.core.tasks``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lungseg.core.labels import INFECTION_UNTYPED
from lungseg.core.masks import reference_sides
from lungseg.core.tasks import (
    IS_INFECTION,
    NOT_INFECTION,
    UNKNOWN,
    TaskSpec,
    joint_code,
    task_spec,
)
from lungseg.dataset.store import BuiltDataset, ManifestRow, SliceRecord

Rows = Callable[[BuiltDataset, str, bool], list[ManifestRow]]


@dataclass(frozen=True)
class Task:
    """A task with its data.

    Attributes:
        spec: classes, heads and description (``lungseg.core.tasks``).
        rows: the manifest rows of a split (``train``, ``val``, ``test``), given whether
            QC-flagged slices are included.
        labels: class indices ``(rows, cols)`` uint8 of a stored slice (with a lung and an
            infection head, the joint code of ``joint_code``; with the infection head alone,
            the infection targets).
    """

    spec: TaskSpec
    rows: Rows
    labels: Callable[[SliceRecord], np.ndarray]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def foreground(self) -> tuple[int, ...]:
        return self.spec.foreground

    @property
    def heads(self) -> dict[str, tuple[int, int]] | None:
        return self.spec.heads


def _lung_rows(dataset: BuiltDataset, split: str, include_flagged: bool) -> list[ManifestRow]:
    return dataset.select(split, include_flagged=include_flagged)


def _infection_rows(dataset: BuiltDataset, split: str, include_flagged: bool) -> list[ManifestRow]:
    """Slices with typed infection labels (MedSeg). Test is the source's own split
    (``infnet_split``, the one published results use); validation is the build's
    val split of the source's training slices; train is the rest of them."""
    typed = [
        r
        for r in dataset.select(None, include_flagged=include_flagged)
        if r.infection_labels == "typed" and r.source_split in ("train", "test")
    ]
    if split == "test":
        return [r for r in typed if r.source_split == "test"]
    trainable = [r for r in typed if r.source_split == "train"]
    if split == "val":
        return [r for r in trainable if r.split == "val"]
    return [r for r in trainable if r.split != "val"]


TYPED_REPEATS = 3
"""``infection-all`` trains on each typed (MedSeg) slice this many times an epoch: 44 of
them beside some 250 one-class slices, and only they teach the classes apart."""


def _binary_rows(dataset: BuiltDataset, split: str, include_flagged: bool) -> list[ManifestRow]:
    """Slices of sources that label infection as one class (COVID-19-CT-Seg), by the
    build's patient split."""
    rows = dataset.select(split, include_flagged=include_flagged)
    return [r for r in rows if r.infection_labels == "binary"]


def _all_infection_rows(
    dataset: BuiltDataset, split: str, include_flagged: bool
) -> list[ManifestRow]:
    """MedSeg's typed slices as ``infection`` takes them (each ``TYPED_REPEATS`` times in
    train), then the one-class sources' slices."""
    typed = _infection_rows(dataset, split, include_flagged)
    binary = _binary_rows(dataset, split, include_flagged)
    return typed * (TYPED_REPEATS if split == "train" else 1) + binary


def infection_rows(dataset: BuiltDataset, split: str) -> list[ManifestRow]:
    """A split's slices with infection labels, each once, as ``lungseg evaluate`` scores
    them."""
    return _infection_rows(dataset, split, False) + _binary_rows(dataset, split, False)


def _infection_target(record: SliceRecord) -> np.ndarray:
    """A slice's infection targets. MedSeg's published infection test slices
    (``source_split`` test) give none: the lungs may learn from them (as the lung
    model's do), the infection head never sees their lesion labels."""
    scheme = record.row.infection_labels
    if scheme == "typed" and record.row.source_split != "test":
        return record.infection.astype(np.uint8)
    if scheme == "binary":
        return np.where(record.infection == INFECTION_UNTYPED, IS_INFECTION, NOT_INFECTION).astype(
            np.uint8
        )
    return np.full(record.infection.shape, UNKNOWN, np.uint8)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(task_spec("lung"), _lung_rows, lambda r: reference_sides(r.lung)),
        Task(task_spec("infection"), _infection_rows, lambda r: r.infection.astype(np.uint8)),
        Task(task_spec("infection-all"), _all_infection_rows, _infection_target),
        Task(
            task_spec("lung+infection"),
            _lung_rows,
            lambda r: joint_code(reference_sides(r.lung), _infection_target(r)),
        ),
    )
}


def get_task(name: str) -> Task:
    task_spec(name)  # the error for an unknown name
    return TASKS[name]
