"""What a model learns, as its card states it: the classes of each head, which of them
the monitored Dice counts, and a description. How a built dataset's slices become a
task's training rows and labels is ``lungseg.dataset.tasks``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungseg.core.labels import CONSOLIDATION, GROUND_GLASS, LUNG_LEFT, LUNG_RIGHT
from lungseg.errors import LungsegError


@dataclass(frozen=True)
class TaskSpec:
    """A segmentation task.

    Attributes:
        name: the task's name (``lung``, ``infection``, ``infection-all``, ``lung+infection``).
        classes: output channel names, background first (of each head in turn).
        foreground: class indices the monitored Dice (``val_dice``) counts as one.
        description: one line for the model card.
        heads: output channels ``[start, stop)`` of each head, where the network's output
            is one softmax per head; ``None`` for one head over all channels. Each head's
            decision is the argmax of its channels.
    """

    name: str
    classes: tuple[str, ...]
    foreground: tuple[int, ...]
    description: str
    heads: dict[str, tuple[int, int]] | None = None


LUNG_CLASSES = ("background", "right_lung", "left_lung")
INFECTION_CLASSES = ("background", "ground_glass", "consolidation", "pleural_effusion")

TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "lung",
            LUNG_CLASSES,
            (LUNG_RIGHT, LUNG_LEFT),
            "lung segmentation on axial chest CT slices: the patient's right and left lung, "
            "told apart by anatomy, in any orientation and common 8-bit rendering",
        ),
        TaskSpec(
            "infection",
            INFECTION_CLASSES,
            (GROUND_GLASS, CONSOLIDATION),
            "COVID-19 infection on axial chest CT slices: ground glass, consolidation, "
            "pleural effusion",
        ),
        TaskSpec(
            "infection-all",
            INFECTION_CLASSES,
            (GROUND_GLASS, CONSOLIDATION),
            "COVID-19 infection on axial chest CT slices: ground glass, consolidation, "
            "pleural effusion; trained on MedSeg's typed lesion labels and COVID-19-CT-Seg's "
            "one-class infection labels",
            heads={"infection": (0, 4)},
        ),
        TaskSpec(
            "lung+infection",
            (*LUNG_CLASSES, "no_infection", *INFECTION_CLASSES[1:]),
            (LUNG_RIGHT, LUNG_LEFT),
            "lungs (the patient's right and left, told apart by anatomy) and COVID-19 findings "
            "(ground glass, consolidation, pleural effusion) on axial chest CT slices in one "
            "pass: two heads, trained on MedSeg's typed lesion labels and COVID-19-CT-Seg's "
            "one-class infection labels",
            heads={"lung": (0, 3), "infection": (3, 7)},
        ),
    )
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASK_SPECS:
        raise LungsegError(f"unknown task {name!r}; known: {', '.join(TASK_SPECS)}")
    return TASK_SPECS[name]


# Infection targets of partly labelled sources. A source that types lesions (MedSeg)
# supervises each class; one that labels infection as one class (COVID-19-CT-Seg)
# supervises only "ground glass or consolidation" against "neither"; a source without
# infection labels supervises nothing there (it is not taken as free of infection).
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
