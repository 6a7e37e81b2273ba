from __future__ import annotations

import numpy as np
import pytest

from lungseg.imaging import Intensity
from lungseg.inference.preprocess import from_model_square, pad_value, to_model_square


@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (90, 40), (33, 17)])
def test_square_and_back_keeps_the_slice_in_place(shape: tuple[int, int]) -> None:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = ((rows // 8 + cols // 8) % 2).astype(np.float32)  # a checkerboard
    square, placement = to_model_square(image, 128)
    assert square.shape == (128, 128)
    back = from_model_square(square[None], placement)[0]
    assert back.shape == shape
    assert np.abs(back - image).mean() < 0.1


def test_labels_stay_labels_and_padding_is_air() -> None:
    mask = np.zeros((20, 60), np.uint8)
    mask[5:15, 10:50] = 1
    square, placement = to_model_square(mask, 30, nearest=True)
    assert set(np.unique(square)) == {0, 1}
    assert (placement.top, placement.left, placement.side) == (20, 0, 60)
    assert pad_value(Intensity.HU) == -1250.0
    assert pad_value(Intensity.DISPLAY) == 0.0
