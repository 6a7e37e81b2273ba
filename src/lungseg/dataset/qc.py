"""Quality checks that find suspicious image/mask pairs on their own.

Each check measures one thing that a real lung mask cannot do and flags the
slice when the measure is out of range. Thresholds live in ``QCConfig`` and
were chosen on ../shared/data (see docs/dataset.md for what each one caught).

Checks that need the whole body in view (mask outside the body, mask touching
the image border, a lung left out) are skipped on tight crops, where lungs
legitimately reach the image edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lungseg.imaging import Intensity
from lungseg.imaging.body import CROP_BORDER_SHARE, DENSE_HU, body_in_view, body_mask, dense_tissue

# Flag names, also the column values in manifest.csv and qc.csv.
MASK_OUTSIDE_BODY = "mask_outside_body"
MASK_TOUCHES_BORDER = "mask_touches_border"
LUNG_FRACTION_IMPLAUSIBLE = "lung_fraction_implausible"
MASK_NOT_LOW_DENSITY = "mask_not_low_density"
MASK_MISSES_LUNG = "mask_misses_lung"
ALL_CHECKS = (
    MASK_OUTSIDE_BODY,
    MASK_TOUCHES_BORDER,
    LUNG_FRACTION_IMPLAUSIBLE,
    MASK_NOT_LOW_DENSITY,
    MASK_MISSES_LUNG,
)


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the quality checks.

    Attributes:
        dense_hu: tissue threshold in HU; below it is air or lung.
        max_outside_body: largest share of mask pixels allowed outside the body.
        max_border_share: largest share of image-border pixels the mask may cover
            when the whole body is in view.
        max_lung_share_of_body: lungs cannot fill more of the body's cross-section.
        min_low_density_share: smallest share of the (non-infected) mask that must
            be darker than soft tissue.
        min_healthy_share: the density check runs only where at least this share
            of the mask is not labelled infection.
        missed_lung_size: a dark region inside the body, beside the masked lungs
            and at least this share of the mask's area, left out of the mask, is a
            missed lung.
        crop_border_share: the body counts as cut by the image edge (a tight crop)
            when it covers more than this share of the border.
    """

    dense_hu: float = DENSE_HU
    max_outside_body: float = 0.05
    max_border_share: float = 0.01
    max_lung_share_of_body: float = 0.8
    min_low_density_share: float = 0.3
    min_healthy_share: float = 0.25
    missed_lung_size: float = 0.2
    crop_border_share: float = CROP_BORDER_SHARE


@dataclass
class QCResult:
    """Measures and flags of one slice."""

    flags: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    full_view: bool = True


def _border(mask: np.ndarray) -> np.ndarray:
    return np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])


def check_slice(
    image: np.ndarray,
    intensity: Intensity,
    lung: np.ndarray,
    infection: np.ndarray | None = None,
    config: QCConfig | None = None,
) -> QCResult:
    """Run every check on one slice.

    Args:
        image: ``(rows, cols)`` HU or display values.
        intensity: what the values mean.
        lung: ``(rows, cols)`` lung labels (non-zero is lung).
        infection: ``(rows, cols)`` infection labels or ``None``; infected lung is
            dense by nature, so it is left out of the density check.
        config: thresholds.
    """
    config = config or QCConfig()
    result = QCResult()
    lung_px = lung != 0
    area = int(lung_px.sum())
    if area == 0:
        return result
    dense = dense_tissue(image, intensity, config.dense_hu)
    body = body_mask(dense)
    result.full_view = body_in_view(body, config.crop_border_share)
    measures = result.measures
    measures["lung_fraction"] = area / lung.size

    healthy = lung_px if infection is None else lung_px & (infection == 0)
    # Infected lung is dense by nature: judge density only where enough lung is healthy.
    if healthy.sum() >= config.min_healthy_share * area:
        measures["low_density_share"] = float((~dense[healthy]).mean())
        if measures["low_density_share"] < config.min_low_density_share:
            result.flags.append(MASK_NOT_LOW_DENSITY)

    if not result.full_view:  # tight crop: the body reaches the edge, and so may the lungs
        if measures["lung_fraction"] > config.max_lung_share_of_body:
            result.flags.append(LUNG_FRACTION_IMPLAUSIBLE)
        return result

    body_area = max(int(body.sum()), 1)
    measures["outside_body_share"] = float((lung_px & ~body).sum() / area)
    measures["border_share"] = float(_border(lung_px).mean())
    measures["lung_share_of_body"] = float((lung_px & body).sum() / body_area)
    measures["missed_lung_share"] = _missed_lung_share(lung_px, body & ~dense, config)
    if measures["outside_body_share"] > config.max_outside_body:
        result.flags.append(MASK_OUTSIDE_BODY)
    if measures["border_share"] > config.max_border_share:
        result.flags.append(MASK_TOUCHES_BORDER)
    if measures["lung_share_of_body"] > config.max_lung_share_of_body:
        result.flags.append(LUNG_FRACTION_IMPLAUSIBLE)
    if measures["missed_lung_share"] >= config.missed_lung_size:
        result.flags.append(MASK_MISSES_LUNG)
    return result


def _missed_lung_share(lung: np.ndarray, dark_in_body: np.ndarray, config: QCConfig) -> float:
    """Area of the largest dark region beside the lungs that the mask leaves out, / mask area.

    "Beside" means its centre lies within the rows the mask spans: the two lungs
    lie side by side, while the hollow patient table lies below them.
    """
    area = lung.sum()
    rows = np.nonzero(lung.any(axis=1))[0]
    labels, count = ndi.label(dark_in_body)
    if count == 0:
        return 0.0
    index = np.arange(1, count + 1)
    sizes = ndi.sum(dark_in_body, labels, index)
    covered = ndi.sum(lung, labels, index)
    centres = ndi.center_of_mass(dark_in_body, labels, index)
    largest = 0.0
    for size, hit, (row, _col) in zip(sizes, covered, centres, strict=True):
        if size < config.missed_lung_size * area or hit > 0.1 * size:
            continue
        if rows[0] <= row <= rows[-1]:
            largest = max(largest, float(size / area))
    return largest
