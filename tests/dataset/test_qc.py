from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from synthetic import ct_slice, display_slice

from lungseg.dataset.qc import (
    LUNG_FRACTION_IMPLAUSIBLE,
    MASK_MISSES_LUNG,
    MASK_NOT_LOW_DENSITY,
    MASK_OUTSIDE_BODY,
    MASK_TOUCHES_BORDER,
    check_slice,
)
from lungseg.imaging import Intensity


def test_a_correct_mask_passes_every_check() -> None:
    hu, lung = ct_slice(128)
    result = check_slice(hu, Intensity.HU, lung)
    assert result.full_view
    assert result.flags == []


def test_mask_over_the_air_around_the_patient_is_flagged() -> None:
    hu, lung = ct_slice(128)
    wrong = lung.copy()
    wrong[:20, :] = 1  # air in front of the chest, up to the image edge
    flags = check_slice(hu, Intensity.HU, wrong).flags
    assert MASK_OUTSIDE_BODY in flags
    assert MASK_TOUCHES_BORDER in flags


def test_mask_with_one_lung_left_out_is_flagged() -> None:
    hu, lung = ct_slice(128)
    one_lung = np.where(lung == 1, 1, 0).astype(np.uint8)
    assert check_slice(hu, Intensity.HU, one_lung).flags == [MASK_MISSES_LUNG]


def test_mask_on_soft_tissue_is_flagged() -> None:
    hu, lung = ct_slice(128)
    tissue = np.zeros_like(lung)
    tissue[92:106, 40:88] = 1  # soft tissue and spine behind the lungs
    assert MASK_NOT_LOW_DENSITY in check_slice(hu, Intensity.HU, tissue).flags


def test_mask_filling_the_body_is_implausible() -> None:
    hu, _ = ct_slice(128)
    body = ndi.binary_fill_holes(hu > -500)
    flags = check_slice(hu, Intensity.HU, body.astype(np.uint8)).flags
    assert LUNG_FRACTION_IMPLAUSIBLE in flags


def test_dense_infected_lung_is_not_flagged_for_density() -> None:
    hu, lung = ct_slice(128)
    consolidated = hu.copy()
    consolidated[lung != 0] = 30  # both lungs consolidated
    infection = (lung != 0).astype(np.uint8) * 2
    assert MASK_NOT_LOW_DENSITY in check_slice(consolidated, Intensity.HU, lung).flags
    assert check_slice(consolidated, Intensity.HU, lung, infection).flags == []


def test_tight_crop_with_lungs_at_the_edge_is_kept() -> None:
    hu, lung = ct_slice(128)
    crop = (slice(30, 100), slice(22, 106))  # lungs reach the crop's edges
    grey = display_slice(hu[crop])
    result = check_slice(grey, Intensity.DISPLAY, lung[crop])
    assert not result.full_view
    assert result.flags == []


def test_lung_free_slice_is_not_checked() -> None:
    hu, _ = ct_slice(64, lung_scale=0)
    assert check_slice(hu, Intensity.HU, np.zeros(hu.shape, np.uint8)).flags == []
