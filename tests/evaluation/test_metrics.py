from __future__ import annotations

import math

import numpy as np
import pytest

from lungseg.evaluation.metrics import slice_scores
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, undo_dihedral


def test_known_overlap() -> None:
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True  # 100 pixels
    predicted = np.zeros((20, 20), bool)
    predicted[5:15, 7:17] = True  # 80 of them right, 20 wrong
    scores = slice_scores(predicted, truth, spacing=(2.0, 0.5))
    assert scores["dice"] == pytest.approx(0.8)
    assert scores["iou"] == pytest.approx(80 / 120)
    assert scores["precision"] == pytest.approx(0.8)
    assert scores["recall"] == pytest.approx(0.8)
    assert scores["hd95"] == pytest.approx(1.0)  # two columns of 0.5 mm


def test_empty_masks() -> None:
    empty = np.zeros((8, 8), bool)
    some = empty.copy()
    some[2:4, 2:4] = True
    both_empty = slice_scores(empty, empty)
    assert (both_empty["dice"], both_empty["iou"], both_empty["recall"]) == (1.0, 1.0, 1.0)
    assert math.isnan(both_empty["hd95"])
    assert slice_scores(empty, some)["dice"] == 0.0
    assert slice_scores(some, empty)["precision"] == 0.0


@pytest.mark.parametrize(("turns", "flip"), DIHEDRAL)
def test_every_orientation_is_undone(turns: int, flip: bool) -> None:
    image = np.arange(12).reshape(3, 4)
    moved = apply_dihedral(image, turns, flip)
    np.testing.assert_array_equal(undo_dihedral(moved, turns, flip), image)


def test_the_eight_orientations_differ() -> None:
    image = np.arange(16).reshape(4, 4)
    seen = {apply_dihedral(image, t, f).tobytes() for t, f in DIHEDRAL}
    assert len(seen) == 8
