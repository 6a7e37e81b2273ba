"""Intensity handling: one documented lung window, never per-slice min-max.

Hounsfield units go through the lung window ``HU_WINDOW`` = [-1250, 250] HU
(the window the public COVID-19 CT benchmark uses; its Radiopaedia volumes are
stored already mapped through it to 0..255). 8-bit display images are taken as
they are: a photo of a slice was windowed by whoever exported it.
"""

from __future__ import annotations

import numpy as np

from lungseg.imaging.types import Intensity

HU_WINDOW: tuple[float, float] = (-1250.0, 250.0)
"""Lung window in HU: values below map to 0, above to 1."""

MEDIASTINAL_WINDOW: tuple[float, float] = (-135.0, 215.0)
"""Mediastinal (soft-tissue) window in HU, W350 L40: a viewing preset, not the model's input."""

CT_STORED_OFFSET = 1024
"""Offset of unsigned CT stored values (HU = stored - 1024, RescaleIntercept -1024)."""


def to_unit_range(
    array: np.ndarray,
    intensity: Intensity,
    *,
    window: tuple[float, float] = HU_WINDOW,
    divisor: float = 255.0,
) -> np.ndarray:
    """Map HU (through ``window``, the lung window by default) or 8-bit display values
    (divided by ``divisor``) to float32 in [0, 1]."""
    if intensity is Intensity.HU:
        low, high = window
        out = (array.astype(np.float32) - low) / (high - low)
        return np.clip(out, 0.0, 1.0, out=out)
    if intensity is Intensity.DISPLAY:
        out = array.astype(np.float32) / divisor
        return np.clip(out, 0.0, 1.0, out=out)
    raise ValueError(f"cannot map {intensity.value} values to intensities")


def to_display(
    array: np.ndarray, intensity: Intensity, window: tuple[float, float] = HU_WINDOW
) -> np.ndarray:
    """The image as 8-bit display values (HU through ``window``, the lung window by default;
    8-bit pictures as they are)."""
    if intensity is Intensity.DISPLAY:
        return array.astype(np.uint8, copy=False)
    return np.round(to_unit_range(array, intensity, window=window) * 255.0).astype(np.uint8)


def hu_from_float(values: np.ndarray, *, offset: float = 0.0, nan: float = -1024.0) -> np.ndarray:
    """HU ``values - offset`` rounded to int16 (clipped to its range; NaN becomes ``nan``).

    A volume is converted plane by plane, so it never needs a float copy of itself:
    a 500-slice scan stays within its own int16 size plus one plane.
    """
    if values.dtype == np.int16 and not offset:
        return values  # already HU as int16: never a second copy of a scan
    if values.ndim == 3:
        out = np.empty(values.shape, np.int16)
        for index, plane in enumerate(values):
            out[index] = hu_from_float(plane, offset=offset, nan=nan)
        return out
    info = np.iinfo(np.int16)
    if values.dtype.kind in "iu" and float(offset).is_integer() and values.dtype.itemsize <= 4:
        # integers (a DICOM's integer rescale): no float copy; clipped as the float path is
        shifted = values.astype(np.int64, copy=False) - int(offset)
        return np.clip(shifted, info.min, info.max).astype(np.int16)
    plane = np.nan_to_num(values.astype(np.float32), nan=nan) - np.float32(offset)
    return np.clip(np.round(plane), info.min, info.max).astype(np.int16)


def display_from_values(values: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``values * scale`` rounded to uint8 (clipped to 0..255), plane by plane."""
    if values.ndim == 3:
        out = np.empty(values.shape, np.uint8)
        for index, plane in enumerate(values):
            out[index] = display_from_values(plane, scale)
        return out
    if values.dtype == np.uint8 and scale == 1.0:
        return values
    plane = np.nan_to_num(values.astype(np.float64)) * scale
    return np.clip(np.round(plane), 0, 255).astype(np.uint8)


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """Smallest and largest finite value (``None`` if there is none), plane by plane."""
    if values.dtype.kind in "iub":
        return (float(values.min()), float(values.max())) if values.size else None
    lows, highs = [], []
    for plane in values if values.ndim == 3 else [values]:
        finite = plane[np.isfinite(plane)]
        if finite.size:
            lows.append(finite.min())
            highs.append(finite.max())
    return (float(min(lows)), float(max(highs))) if lows else None


def classify_values(values: np.ndarray) -> tuple[np.ndarray, Intensity, str]:
    """Decide what numeric pixel values mean when the file does not say.

    Rules (documented in docs/imaging.md):
      * any value below 0 -> Hounsfield units;
      * all values within 0..255 -> 8-bit display values (already windowed);
      * non-negative values above 255 up to 4095 + 1024 -> unsigned CT stored
        values, HU = value - 1024;
      * larger non-negative values -> a 16-bit display image, value * 255 / 65535.

    Returns the converted array, its intensity kind and a note saying which rule applied.
    """
    bounds = finite_range(values)
    if bounds is None:
        raise ValueError("the image has no finite pixel values")
    low, high = bounds
    if values.dtype.kind == "f" and low >= 0.0 and high <= 1.0 and high > 0.0:
        return (
            display_from_values(values, 255.0),
            Intensity.DISPLAY,
            "float values in [0, 1] taken as display values",
        )
    if low < 0:
        return hu_from_float(values), Intensity.HU, "negative values: HU"
    if high <= 255:
        return display_from_values(values), Intensity.DISPLAY, "values in 0..255: display"
    if high <= 4095 + CT_STORED_OFFSET:
        return (
            hu_from_float(values, offset=CT_STORED_OFFSET),
            Intensity.HU,
            f"non-negative values up to {high:.0f}: CT stored values, HU = value - 1024",
        )
    full_scale = 65535.0 if high <= 65535 else high
    return (
        display_from_values(values, 255.0 / full_scale),
        Intensity.DISPLAY,
        f"non-negative values up to {high:.0f}: 16-bit display image, value * 255 / 65535",
    )
