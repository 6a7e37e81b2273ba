"""Where the patient is: dense tissue and the body's cross-section on an axial slice.

Shared by the dataset quality checks and the prediction post-processing, so
both agree on what "inside the body" means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from lungseg.core.morphology import component_sizes, fill_holes, label
from lungseg.imaging.intensity import to_display
from lungseg.imaging.types import Intensity

DENSE_HU = -400.0
"""Soft-tissue threshold in HU: lung and air lie below it."""


def otsu_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold of an 8-bit image (the value that best splits it in two); for an
    image of one grey level, that level (nothing lies above it)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    prob = hist / hist.sum()
    weight = np.cumsum(prob)
    mean = np.cumsum(prob * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean) ** 2 / (weight * (1.0 - weight))
    if not np.isfinite(between).any():  # one grey level: nothing to split
        return int(grey.max(initial=0))
    return int(np.nanargmax(between))


def dense_tissue(image: np.ndarray, intensity: Intensity, dense_hu: float = DENSE_HU) -> np.ndarray:
    """Pixels denser than lung: above ``dense_hu`` for HU, above Otsu's threshold for display."""
    if intensity is Intensity.HU:
        return image > dense_hu
    grey = to_display(image, intensity)
    return grey > otsu_threshold(grey)


def body_mask(dense: np.ndarray) -> np.ndarray:
    """The patient's cross-section: the largest dense region with its holes (lungs) filled."""
    labels, count = label(dense)
    if count == 0:
        return np.zeros_like(dense)
    sizes = component_sizes(labels, count)
    sizes[0] = 0
    return fill_holes(labels == int(np.argmax(sizes)))


CROP_BORDER_SHARE = 0.05
"""The body counts as cut by the image edge (a tight crop) above this share of border pixels."""


def body_in_view(body: np.ndarray, crop_border_share: float = CROP_BORDER_SHARE) -> bool:
    """Whether the whole body lies inside the image (not a tight crop around the chest)."""
    border = np.concatenate([body[0], body[-1], body[1:-1, 0], body[1:-1, -1]])
    return float(border.mean()) <= crop_border_share


BACKGROUND_MARGIN = 10
"""Grey levels above the image border's level that count as patient, not background."""


def body_estimates(
    image: np.ndarray, intensity: Intensity, *, first: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Estimates of the body's cross-section, most restrictive first, each made when
    asked for (``first``: the first one, where made already).

    HU: one, from the soft-tissue threshold. 8-bit pictures come in any window, so
    two: Otsu's split (right for lung windows, where air and lungs are dark and fat
    bright), and everything brighter than the background at the image border (right
    for soft-tissue windows, where fat is dark grey and the lungs as black as the
    air: Otsu's split there can leave the lungs outside the body).
    """
    yield body_mask(dense_tissue(image, intensity)) if first is None else first
    if intensity is Intensity.DISPLAY:
        grey = to_display(image, intensity)
        border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
        yield body_mask(grey > int(np.median(border)) + BACKGROUND_MARGIN)


def usable(estimates: Iterable[np.ndarray]) -> list[np.ndarray | None]:
    """The estimates wholly in view, in order, and ``None`` (no estimate: a tight crop, or
    a scan table that reaches the image edge) last where one is not."""
    estimates = list(estimates)
    in_view: list[np.ndarray | None] = [b for b in estimates if b.any() and body_in_view(b)]
    if len(in_view) < len(estimates):
        in_view.append(None)
    return in_view
