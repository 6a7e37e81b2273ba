"""Post-processing of predicted lung masks, as plain functions.

Like the established tools: keep the lung components and drop specks, fill
holes, never call anything outside the patient's body lung, and label the
patient's right and left lung apart (with a fallback where the lungs touch).
Every function takes a slice ``(rows, cols)`` or a volume ``(slices, rows, cols)``
in the radiological view the readers return (patient's right on the image's left).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungseg.dataset.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.imaging.morphology import component_sizes, fill_holes

MIN_COMPONENT_SHARE = 0.01
"""Components smaller than this share of the largest one are specks."""


def clean_lung_mask(
    lung: np.ndarray,
    body: np.ndarray | None = None,
    *,
    min_component_share: float = MIN_COMPONENT_SHARE,
) -> np.ndarray:
    """Binary lung mask with specks removed, holes filled and nothing outside ``body``.

    Args:
        lung: non-zero where the model says lung.
        body: the patient's cross-section(s), same shape; ``None`` keeps everything.
        min_component_share: components (connected in 3D for volumes) smaller than
            this share of the largest are dropped.
    """
    mask = lung != 0
    if body is not None:
        mask &= body
    labels, count = ndi.label(mask)
    if count > 1:
        sizes = component_sizes(labels, count)
        sizes[0] = 0
        keep = sizes >= min_component_share * sizes.max()
        keep[0] = False
        mask = keep[labels]
    return fill_holes(mask)


def split_left_right(lung: np.ndarray) -> np.ndarray:
    """Label a binary lung mask ``LUNG_RIGHT`` (1) and ``LUNG_LEFT`` (2).

    Where the two largest components are both substantial, each component goes
    to the side of the nearer of the two (by mean column). Where the lungs touch
    and form one component, the mask is cut at the column with the least lung
    within the middle 40 % of the lungs' width: the mediastinum.

    Returns:
        uint8 labels of ``lung``'s shape.
    """
    mask = lung != 0
    out = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return out
    columns = np.nonzero(mask)[-1]
    labels, count = ndi.label(mask)
    sizes = component_sizes(labels, count)[1:]
    order = np.argsort(sizes)[::-1]
    if count >= 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        column_index = np.broadcast_to(np.arange(mask.shape[-1]), mask.shape)
        column_sums = np.bincount(
            labels.ravel(), weights=column_index.ravel(), minlength=count + 1
        )[1:]
        centres = column_sums / sizes
        right_centre, left_centre = sorted(centres[order[:2]])
        near_right = np.abs(centres - right_centre) <= np.abs(centres - left_centre)
        side = np.concatenate([[0], np.where(near_right, LUNG_RIGHT, LUNG_LEFT)]).astype(np.uint8)
        return side[labels]
    cut = _mediastinum_column(mask, int(columns.min()), int(columns.max()))
    column_index = np.arange(mask.shape[-1])
    out[mask & (column_index < cut)] = LUNG_RIGHT
    out[mask & (column_index >= cut)] = LUNG_LEFT
    return out


def _mediastinum_column(mask: np.ndarray, first: int, last: int) -> int:
    profile = mask.reshape(-1, mask.shape[-1]).sum(axis=0)
    width = last - first + 1
    low, high = first + int(0.3 * width), first + int(0.7 * width) + 1
    return low + int(np.argmin(profile[low:high]))


def lung_measures(labels: np.ndarray, spacing: tuple[float, ...] | None) -> dict[str, float]:
    """Right, left and total lung size: mL for a volume, mm² for a slice, pixels without spacing.

    Args:
        labels: ``LUNG_RIGHT``/``LUNG_LEFT`` labels (any other non-zero counts in the total only).
        spacing: mm per pixel in array axis order, or ``None``.
    """
    counts = {
        "right": float((labels == LUNG_RIGHT).sum()),
        "left": float((labels == LUNG_LEFT).sum()),
        "total": float((labels != 0).sum()),
    }
    if spacing is None:
        return counts
    unit = float(np.prod(spacing[-labels.ndim :]))  # mm² or mm³ per pixel
    scale = unit / 1000.0 if labels.ndim == 3 else unit  # 1 mL = 1000 mm³
    return {name: value * scale for name, value in counts.items()}
