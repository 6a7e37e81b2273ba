from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lungseg.errors import LungsegError
from lungseg.imaging import Intensity
from lungseg.inference.preprocess import (
    Preprocessing,
    decision_at_slice_size,
    from_model_square,
    to_model_square,
)


@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (90, 40), (33, 17)])
def test_square_and_back_keeps_the_slice_in_place(shape: tuple[int, int]) -> None:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = ((rows // 8 + cols // 8) % 2).astype(np.float32)  # a checkerboard
    square, placement = to_model_square(image, 128)
    assert square.shape == (128, 128)
    back = from_model_square(square[None], placement)[0]
    assert back.shape == shape
    assert np.abs(back - image).mean() < 0.1


def test_labels_stay_labels() -> None:
    mask = np.zeros((20, 60), np.uint8)
    mask[5:15, 10:50] = 1
    square, placement = to_model_square(mask, 30, nearest=True)
    assert set(np.unique(square)) == {0, 1}
    assert (placement.top, placement.left, placement.side) == (20, 0, 60)


def test_the_padded_border_is_air_after_windowing() -> None:
    """A wide HU slice padded to a square: the rows added above and below are exactly the
    value of air below the window (0), and the slice's own pixels are windowed."""
    hu = np.full((20, 60), 40, np.int16)  # soft tissue everywhere
    contract = Preprocessing(size=60)
    square, placement = contract.prepare(hu, Intensity.HU)
    assert (placement.top, placement.rows) == (20, 20)
    assert (square[:20] == 0.0).all() and (square[40:] == 0.0).all()
    np.testing.assert_allclose(square[20:40], (40 + 1250) / 1500, rtol=1e-6)


def test_the_contract_round_trips_and_refuses_nonsense() -> None:
    contract = Preprocessing(size=128, hu_window=(-1000.0, 200.0))
    assert Preprocessing.from_dict(contract.to_dict()) == contract
    with pytest.raises(LungsegError, match="hu_window"):
        Preprocessing(hu_window=(100.0, -100.0))
    with pytest.raises(LungsegError, match="resample"):
        Preprocessing(resample="bicubic")
    with pytest.raises(LungsegError, match="unknown pre-processing settings: flip"):
        Preprocessing.from_dict({"flip": True})


@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (333, 170)])
def test_the_decision_at_slice_size_is_the_argmax_of_the_resized_probabilities(
    shape: tuple[int, int],
) -> None:
    """One class at a time (bounded memory on huge slices), the same answer, ties included."""
    _, placement = to_model_square(np.zeros(shape, np.float32), 64)
    rng = np.random.default_rng(0)
    probabilities = rng.random((4, 64, 64)).astype(np.float32)
    probabilities[2, :10] = probabilities[1, :10]  # ties go to the first class
    expected = from_model_square(probabilities, placement).argmax(axis=0)
    np.testing.assert_array_equal(decision_at_slice_size(probabilities, placement), expected)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(8, 600),
    cols=st.integers(8, 600),
    size=st.sampled_from([32, 64]),
    classes=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_only_the_window_around_what_is_found_is_resized_and_the_decision_is_the_same(
    rows: int, cols: int, size: int, classes: int, seed: int
) -> None:
    """Mostly background with a few blobs, as a model's maps are: resizing only the
    window around the blobs gives the whole-square decision, but where the two best
    classes tie to within float rounding."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    logits = gaussian_filter(rng.normal(size=(classes, size, size)), (0, 2, 2)) * 20.0
    logits[0] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    probabilities = probabilities.astype(np.float32)
    _, placement = to_model_square(np.zeros((rows, cols), np.float32), size)
    resized = from_model_square(probabilities, placement)
    expected = resized.argmax(axis=0)
    decided = decision_at_slice_size(probabilities, placement)
    ordered = np.sort(resized, axis=0)
    near_tie = ordered[-1] - ordered[-2] < 1e-5
    np.testing.assert_array_equal(decided[~near_tie], expected[~near_tie])


def test_chunks_run_ahead_of_their_decisions_in_order_and_failures_surface(tmp_path) -> None:
    """Over several chunks the model runs one chunk ahead (a second thread) of the
    decisions: the maps come in slice order, each as the slice alone gives it, progress
    counts whole chunks, and an error in the model's thread reaches the caller."""
    from models import dark_is_lung_onnx

    from lungseg.inference.model import CHUNK, SegmentationModel

    model = SegmentationModel(dark_is_lung_onnx(tmp_path / "m.onnx"))
    rng = np.random.default_rng(0)
    images = [(rng.random((40 + i % 3, 48)) * 255).astype(np.uint8) for i in range(CHUNK * 2 + 5)]
    kinds = [Intensity.DISPLAY] * len(images)
    seen: list[int] = []
    maps = list(model.iter_class_maps(images, kinds, progress=lambda done, _: seen.append(done)))
    assert seen == [CHUNK, 2 * CHUNK, 2 * CHUNK + 5]
    for index in (0, CHUNK + 1, 2 * CHUNK + 4):
        alone = next(model.iter_class_maps([images[index]], [kinds[index]]))
        np.testing.assert_array_equal(maps[index], alone)

    def broken(*_: object, **__: object) -> tuple[np.ndarray, None]:
        raise LungsegError("the model broke")

    model.run = broken  # type: ignore[method-assign]
    with pytest.raises(LungsegError, match="the model broke"):
        list(model.iter_class_maps(images, kinds))
