from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungseg.core.metrics import Confusion, slice_scores
from lungseg.core.morphology import fill_holes
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


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(rng.random(shape), 3) > 0.52


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_monais(seed: int) -> None:
    """The torch-free scores are MONAI's (the implementation they replace), blob masks
    with holes, several parts and pixels on the border; HD95 in pixels and in mm."""
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(seed)
    prediction, truth = _blobs(rng, (64, 80)), _blobs(rng, (64, 80))
    spacing = (0.7, 1.3)

    def onehot(mask: np.ndarray) -> object:
        tensor = torch.as_tensor(mask).float()[None, None]
        return torch.cat([1 - tensor, tensor], dim=1)

    pred, true = onehot(prediction), onehot(truth)
    dice = float(metrics.compute_dice(pred, true, include_background=False)[0, 0])
    iou = float(metrics.compute_iou(pred, true, include_background=False)[0, 0])
    scores = slice_scores(prediction, truth, spacing)
    assert scores["dice"] == pytest.approx(dice, abs=1e-6)
    assert scores["iou"] == pytest.approx(iou, abs=1e-6)
    for pixel_size in (None, spacing):
        expected = metrics.compute_hausdorff_distance(
            pred,
            true,
            include_background=False,
            percentile=95,
            spacing=list(pixel_size) if pixel_size else None,
        )
        assert slice_scores(prediction, truth, pixel_size)["hd95"] == pytest.approx(
            float(expected[0, 0]), abs=1e-4
        )


def test_batched_counts_score_each_slice() -> None:
    truth = np.zeros((3, 10, 10), bool)
    truth[:2, 2:6, 2:6] = True
    prediction = truth.copy()
    prediction[1, 2:6, 2:4] = False  # half of slice 1 missed; slice 2 empty in both
    counts = Confusion.of(prediction, truth, axes=(1, 2))
    np.testing.assert_allclose(counts.dice(), [1.0, 2 * 8 / (8 + 16), 1.0])
    np.testing.assert_allclose(counts.recall(), [1.0, 0.5, 1.0])


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24)))
    | arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)))
)
def test_fill_holes_is_scipys(mask: np.ndarray) -> None:
    """Any mask, 2D or a stack (filled slice by slice): the same as SciPy's."""
    from scipy import ndimage as ndi

    expected = (
        ndi.binary_fill_holes(mask)
        if mask.ndim == 2
        else np.stack([ndi.binary_fill_holes(plane) for plane in mask])
    )
    np.testing.assert_array_equal(fill_holes(mask), expected)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 10), st.integers(1, 10))),
    st.integers(0, 8),
    st.integers(0, 8),
    st.integers(0, 8),
    st.integers(0, 8),
)
def test_fill_holes_is_scipys_where_the_mask_is_small_in_its_frame(
    small: np.ndarray, top: int, bottom: int, left: int, right: int
) -> None:
    """A mask somewhere in a larger empty picture, touching its edges or not (the
    bounding box fill_holes works in)."""
    from scipy import ndimage as ndi

    mask = np.pad(small, ((top, bottom), (left, right)))
    np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
