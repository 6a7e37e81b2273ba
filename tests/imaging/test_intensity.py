from __future__ import annotations

import numpy as np
import pytest

from lungseg.imaging import HU_WINDOW, Intensity, to_display, to_unit_range
from lungseg.imaging.intensity import classify_values


def test_lung_window_maps_its_ends_to_zero_and_one() -> None:
    hu = np.array([-3000, HU_WINDOW[0], -500, HU_WINDOW[1], 3000], dtype=np.int16)
    np.testing.assert_allclose(to_unit_range(hu, Intensity.HU), [0, 0, 0.5, 1, 1])


def test_display_values_are_scaled_not_stretched() -> None:
    """A dark 8-bit image stays dark: no per-image min-max normalisation."""
    grey = np.array([10, 20, 30], dtype=np.uint8)
    np.testing.assert_allclose(to_unit_range(grey, Intensity.DISPLAY), grey / 255.0)
    np.testing.assert_array_equal(to_display(grey, Intensity.DISPLAY), grey)


def test_hu_and_radiopaedia_style_display_agree_through_the_window() -> None:
    hu = np.linspace(-1250, 250, 61).astype(np.int16)
    display = np.round((hu + 1250) / 1500 * 255).astype(np.uint8)
    np.testing.assert_allclose(
        to_unit_range(hu, Intensity.HU), to_unit_range(display, Intensity.DISPLAY), atol=0.003
    )


@pytest.mark.parametrize(
    ("values", "kind", "first"),
    [
        (np.array([-1000.0, 50.0]), Intensity.HU, -1000),
        (np.array([0.0, 255.0]), Intensity.DISPLAY, 0),
        (np.array([0.0, 0.5]), Intensity.DISPLAY, 0),
        (np.array([24.0, 3000.0]), Intensity.HU, -1000),
        (np.array([0.0, 65535.0]), Intensity.DISPLAY, 0),
    ],
)
def test_classify_values_rules(values: np.ndarray, kind: Intensity, first: int) -> None:
    array, found, note = classify_values(values)
    assert found is kind
    assert int(array[0]) == first
    assert note


def test_label_values_cannot_be_windowed() -> None:
    with pytest.raises(ValueError, match="cannot map"):
        to_unit_range(np.zeros(3, np.uint8), Intensity.LABEL)
