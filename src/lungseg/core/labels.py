"""Label values stored in a built dataset (and written by predictions)."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

# Lung labels. Right and left are the patient's, in the radiological view every
# reader returns (patient's right lung on the image's left).
LUNG_RIGHT = 1
LUNG_LEFT = 2
LUNG_SIDE_UNKNOWN = 3
"""Lung where the source does not tell the two lungs apart."""

# Infection labels (MedSeg convention, plus one for sources that do not type lesions).
GROUND_GLASS = 1
CONSOLIDATION = 2
PLEURAL_EFFUSION = 3
INFECTION_UNTYPED = 4
"""Infection where the source labels lesions as one class (COVID-19-CT-Seg)."""


class InfectionLabels(StrEnum):
    """How a source labels infection."""

    NONE = "none"
    TYPED = "typed"  # 1 ground glass, 2 consolidation, 3 effusion
    BINARY = "binary"  # any non-zero value is infection


def sided_lung_labels(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Turn a source's lung mask into lungseg's lung labels.

    A mask with exactly two non-zero labels (as in COVID-19-CT-Seg, which labels
    the lungs 1 and 2) is taken as two lungs; which is right and which is left is
    decided from where they lie (patient's right lung on the image's left in the
    radiological view), never from the label numbers. Any other mask is lung of
    unknown side.

    Args:
        mask: ``(rows, cols)`` or ``(slices, rows, cols)`` labels in display order.

    Returns:
        ``(labels, has_sides)``: uint8 array with ``LUNG_RIGHT``/``LUNG_LEFT`` or
        ``LUNG_SIDE_UNKNOWN``, and whether sides are known.
    """
    values = [int(v) for v in np.unique(mask) if v != 0]
    out = np.zeros(mask.shape, dtype=np.uint8)
    if len(values) == 2:
        columns = np.arange(mask.shape[-1])
        mean_column = {}
        for value in values:
            per_column = (mask == value).sum(axis=tuple(range(mask.ndim - 1)))
            mean_column[value] = float((per_column * columns).sum() / max(per_column.sum(), 1))
        right, left = sorted(values, key=mean_column.__getitem__)
        out[mask == right] = LUNG_RIGHT
        out[mask == left] = LUNG_LEFT
        return out, True
    out[mask != 0] = LUNG_SIDE_UNKNOWN
    return out, False


def infection_labels(mask: np.ndarray, scheme: InfectionLabels) -> np.ndarray:
    """A source's infection mask in lungseg's infection labels (uint8)."""
    if scheme is InfectionLabels.TYPED:
        if mask.max(initial=0) > PLEURAL_EFFUSION:
            raise ValueError(f"typed infection labels must be 0..3, found {mask.max()}")
        return mask.astype(np.uint8)
    if scheme is InfectionLabels.BINARY:
        return np.where(mask != 0, INFECTION_UNTYPED, 0).astype(np.uint8)
    return np.zeros(mask.shape, dtype=np.uint8)
