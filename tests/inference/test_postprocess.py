from __future__ import annotations

import numpy as np
import pytest
from synthetic import ct_slice, ct_volume

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.core.masks import clean_lung_mask, lung_measures, split_left_right
from lungseg.imaging import Intensity
from lungseg.imaging.body import body_mask, dense_tissue


def test_specks_holes_and_outside_body_are_cleaned() -> None:
    hu, lung = ct_slice(128)
    predicted = lung > 0
    predicted[60:63, 40:43] = False  # a vessel hole inside the right lung
    predicted[100:102, 20:22] = True  # a speck in the chest wall
    predicted[2:12, 2:40] = True  # the air in front of the patient
    body = body_mask(dense_tissue(hu, Intensity.HU))
    cleaned = clean_lung_mask(predicted, body)
    np.testing.assert_array_equal(cleaned, lung > 0)


def test_two_lungs_are_sided_by_position() -> None:
    _, lung = ct_slice(96)
    labels = split_left_right(lung > 0)
    np.testing.assert_array_equal(labels == LUNG_RIGHT, lung == 1)  # image left = patient's right
    np.testing.assert_array_equal(labels == LUNG_LEFT, lung == 2)


def test_touching_lungs_are_cut_at_the_mediastinum() -> None:
    _, lung = ct_slice(96)
    bridged = lung > 0
    bridged[44:47, 20:76] = True  # an anterior junction joining the lungs
    labels = split_left_right(bridged)
    assert (labels[lung == 1] == LUNG_RIGHT).mean() > 0.97
    assert (labels[lung == 2] == LUNG_LEFT).mean() > 0.97


def test_a_small_third_component_joins_the_nearer_lung() -> None:
    _, lung = ct_slice(96)
    mask = lung > 0
    mask[40:44, 22:26] = False
    mask[10:14, 20:24] = True  # apex-like island above the right lung
    labels = split_left_right(mask)
    assert (labels[10:14, 20:24] == LUNG_RIGHT).all()


def test_volume_measures_in_ml_and_slice_area_in_mm2() -> None:
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[:, :5, :5] = LUNG_RIGHT  # 100 voxels
    labels[:, :5, 5:] = LUNG_LEFT  # 100 voxels
    measures = lung_measures(labels, (5.0, 2.0, 1.0))  # 10 mm³ per voxel
    assert measures == pytest.approx({"right": 1.0, "left": 1.0, "total": 2.0})
    assert lung_measures(labels[0], (2.0, 1.0))["total"] == pytest.approx(100.0)
    assert lung_measures(labels[0], None)["right"] == 25.0


def test_volume_is_cleaned_in_3d() -> None:
    hu, lung = ct_volume(slices=6, size=64, lung_free=1)
    predicted = lung > 0
    predicted[0, 30:32, 30:32] = True  # a speck on a lung-free slice
    body = np.stack([body_mask(dense_tissue(s, Intensity.HU)) for s in hu])
    cleaned = clean_lung_mask(predicted, body)
    assert not cleaned[0].any()
    labels = split_left_right(cleaned)
    np.testing.assert_array_equal(labels == LUNG_RIGHT, lung == 1)


def test_empty_mask_stays_empty() -> None:
    empty = np.zeros((8, 8), bool)
    assert not clean_lung_mask(empty).any()
    assert not split_left_right(empty).any()


def test_sided_labels_are_made_whole_and_gut_gas_below_the_lungs_goes() -> None:
    """Raw sided labels: a few wrong-side pixels inside a lung take the lung's side, holes
    are filled with the side around them, and in a volume a separate air pocket below the
    lungs (stomach gas) is dropped even though every slice alone would keep it."""
    from lungseg.core.masks import clean_lung_labels

    _, lungs = ct_slice(64)
    raw = lungs.copy()
    raw[30:33, 20:22] = LUNG_LEFT  # a speck of the wrong side inside the right lung
    raw[26:28, 18:20] = 0  # a hole
    cleaned = clean_lung_labels(raw)
    np.testing.assert_array_equal(cleaned, lungs)

    volume = np.zeros((10, 64, 64), np.uint8)
    volume[4:] = lungs  # the lungs from slice 4 up
    volume[0:2, 40:50, 40:50] = LUNG_LEFT  # gas two slices below, not touching them in 3D
    cleaned = clean_lung_labels(volume)
    assert not cleaned[:4].any()
    np.testing.assert_array_equal(cleaned[4:], volume[4:])


def test_two_lungs_take_opposite_sides_even_where_the_model_is_unsure_of_one() -> None:
    """The model calls most of both lungs 'right' (as on a mirrored photo where it hesitates):
    the clear lung decides, and the two separate lungs never share a side."""
    from lungseg.core.masks import clean_lung_labels

    _, lungs = ct_slice(64)
    raw = lungs.copy()
    raw[lungs == 2] = LUNG_RIGHT  # the left lung called right...
    raw[(lungs == 2) & (np.arange(64) > 46)] = LUNG_LEFT  # ...but for a part of it
    cleaned = clean_lung_labels(raw)
    np.testing.assert_array_equal(cleaned, lungs)
    swapped = np.where(raw == LUNG_RIGHT, LUNG_LEFT, np.where(raw == LUNG_LEFT, LUNG_RIGHT, 0))
    assert set(np.unique(clean_lung_labels(swapped.astype(np.uint8))[lungs == 1])) == {LUNG_LEFT}


def test_a_soft_tissue_picture_keeps_lungs_as_black_as_the_air() -> None:
    """A soft-tissue window: fat dark grey, muscle bright, lungs and air black. Otsu's body
    (muscle) leaves the lungs outside where fat links them to the air; the body brighter
    than the background keeps them, and that estimate is the one used."""
    from synthetic import ellipse

    from lungseg.imaging.body import body_estimates
    from lungseg.inference.model import body_for

    shape = (96, 96)
    grey = np.zeros(shape, np.uint8)
    grey[ellipse(shape, (48, 48), (34, 44))] = 38  # fat
    grey[ellipse(shape, (48, 48), (28, 38)) & ~ellipse(shape, (48, 48), (24, 34))] = 140  # muscle
    grey[44:52, 10:20] = 38  # a fat gap through the muscle wall
    lungs = ellipse(shape, (48, 30), (16, 10)) | ellipse(shape, (48, 66), (16, 10))
    grey[lungs] = 0
    grey[44:52, 14:24] = 0  # the right lung reaches the gap
    labels = lungs.astype(np.uint8)
    otsu_body = next(body_estimates(grey, Intensity.DISPLAY))
    assert otsu_body is not None and not otsu_body[lungs].all()
    body = body_for(labels, grey, Intensity.DISPLAY)
    assert body is not None and body[lungs].all() and not body[0, 0]


def touching_lungs(size: int = 128) -> np.ndarray:
    """Two lungs (1: image left, 2: image right) that meet in front of the heart."""
    _, lung = ct_slice(size)
    joined = lung.copy()
    junction = slice(int(size * 0.3), int(size * 0.38)), slice(int(size * 0.3), int(size * 0.7))
    joined[junction] = np.where(np.arange(size)[junction[1]] < size // 2, 1, 2)
    return joined


@pytest.mark.parametrize("turns", [0, 1])
def test_touching_lungs_are_split_where_they_meet(turns: int) -> None:
    """One connected region, two lungs: each lung comes out whole, whichever way the
    picture is turned, and the cut lies at the junction."""
    from lungseg.core.masks import split_touching

    lungs = np.rot90(touching_lungs(), turns)
    parts = split_touching(lungs > 0)
    assert parts is not None
    for lung in (1, 2):
        shares = np.bincount(parts[lungs == lung], minlength=3)[1:] / (lungs == lung).sum()
        assert shares.max() > 0.97, (lung, shares)


def test_one_lung_is_not_split() -> None:
    """An apex slice's single lung, and a lung with a shallow waist, stay one piece."""
    from synthetic import ellipse

    from lungseg.core.masks import split_touching

    assert split_touching(ellipse((96, 96), (48, 30), (20, 12))) is None
    waisted = ellipse((96, 96), (30, 48), (18, 20)) | ellipse((96, 96), (62, 48), (18, 20))
    assert split_touching(waisted | ellipse((96, 96), (46, 48), (12, 14))) is None


@pytest.mark.parametrize("votes", ["model", "all-right", "mostly-right"])
def test_touching_lungs_keep_both_sides_whatever_the_model_votes(votes: str) -> None:
    """A slice's touching lungs always come out as a right and a left lung: by the
    model's side pixels where it tells them apart, and where it calls most of both
    lungs one side (as it did on two MedSeg crops), the lung with more of that side's
    votes takes it and the other the other side."""
    from lungseg.core.masks import clean_lung_labels

    lungs = touching_lungs()
    raw = np.where(lungs > 0, LUNG_RIGHT, 0).astype(np.uint8)
    if votes == "model":
        raw[lungs == 2] = LUNG_LEFT
    elif votes == "mostly-right":  # 30 % of the image-right lung voted left
        rows, cols = np.nonzero(lungs == 2)
        chosen = np.random.default_rng(0).random(rows.size) < 0.3
        raw[rows[chosen], cols[chosen]] = LUNG_LEFT
    labels = clean_lung_labels(raw)
    for lung, side in ((1, LUNG_RIGHT), (2, LUNG_LEFT)):
        assert (labels[lungs == lung] == side).mean() > 0.97, (votes, lung)
