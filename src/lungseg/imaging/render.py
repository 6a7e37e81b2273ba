"""How people turn a CT slice into a picture: the exporters lungseg must be right on.

A slice arrives as HU (DICOM, NIfTI) or as an 8-bit picture that somebody made
from HU. Pictures differ in more than orientation: a lung window, a soft-tissue
window (lungs black), a bone or wide window, a per-slice min-max over the whole
stored range (with the scanner's very negative padding outside the scan circle,
which turns air grey), CLAHE after min-max (the public notebooks on the
COVID-19-CT-Seg set use OpenCV's CLAHE with clip limit 7 and 256 px), global
histogram equalisation, gamma, JPEG at any quality.

Each step here is a plain function from an array to an 8-bit ``uint8`` picture.
``RENDERINGS`` names the fixed exporters that ``lungseg evaluate`` scores;
training draws random ones (``training.augment``). Torch-free; CLAHE needs
OpenCV (``opencv-python-headless``, in the train extra).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

AIR_HU = -1024.0
"""Values below this are the scanner's padding outside the scan circle (or noise in air)."""


def window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """HU through a display window (centre/level and width in HU) to 8-bit."""
    low = centre - width / 2.0
    unit = (hu.astype(np.float32) - low) / float(width)
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def min_max(values: np.ndarray, *, without_padding: bool = False) -> np.ndarray:
    """Per-slice min-max to 8-bit over all stored values, or over values from air up
    (``without_padding``: the scanner's padding is clipped to -1024 HU first)."""
    data = values.astype(np.float32)
    if without_padding:
        data = np.maximum(data, AIR_HU)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((data - low) / (high - low) * 255.0).astype(np.uint8)


def clahe(grey: np.ndarray, clip_limit: float, tiles: int = 8) -> np.ndarray:
    """OpenCV's contrast-limited adaptive histogram equalisation of an 8-bit picture."""
    import cv2  # only renderings need OpenCV

    return np.asarray(
        cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tiles, tiles)).apply(grey)
    )


def equalise(grey: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of an 8-bit picture."""
    histogram = np.bincount(grey.ravel(), minlength=256)
    cdf = np.cumsum(histogram).astype(np.float64)
    first = cdf[np.nonzero(histogram)[0][0]]
    if cdf[-1] <= first:
        return grey.copy()
    table = np.round((cdf - first) / (cdf[-1] - first) * 255.0)
    return np.clip(table, 0, 255).astype(np.uint8)[grey]


def gamma(grey: np.ndarray, value: float) -> np.ndarray:
    """Gamma curve on an 8-bit picture (below 1 brightens)."""
    unit = grey.astype(np.float32) / 255.0
    return np.round(np.power(unit, value) * 255.0).astype(np.uint8)


def jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    """Save an 8-bit picture as JPEG at ``quality`` and read it back."""
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.uint8)


def resize(grey: np.ndarray, side: int) -> np.ndarray:
    """Resize an 8-bit picture to ``side`` x ``side`` (as exporters that save 256 px do)."""
    if grey.shape == (side, side):
        return grey
    return np.asarray(
        Image.fromarray(grey).resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint8
    )


def lung_window(hu: np.ndarray) -> np.ndarray:
    """The common lung window, W1500 L-600."""
    return window(hu, -600.0, 1500.0)


@dataclass(frozen=True)
class Rendering:
    """A named exporter of HU slices: what it makes, and how it turns the slice.

    Attributes:
        name: short name used in tables.
        make: HU slice -> 8-bit picture (same orientation).
        description: in a user's words.
        turns, flip: the orientation the exporter leaves the picture in
            (``imaging.orientation.apply_dihedral``); scores are taken after undoing it.
    """

    name: str
    make: Callable[[np.ndarray], np.ndarray]
    description: str
    turns: int = 0
    flip: bool = False


CLAHE_EXPORT_SIDE = 256
CLAHE_EXPORT_CLIP = 7.0

RENDERINGS: dict[str, Rendering] = {
    r.name: r
    for r in (
        Rendering("lung_window", lung_window, "lung window W1500 L-600"),
        Rendering("soft_tissue", lambda hu: window(hu, 40.0, 400.0), "soft-tissue window W400 L40"),
        Rendering("bone", lambda hu: window(hu, 500.0, 2000.0), "bone window W2000 L500"),
        Rendering(
            "min_max_padded", min_max, "per-slice min-max over all stored values (padding kept)"
        ),
        Rendering(
            "min_max",
            lambda hu: min_max(hu, without_padding=True),
            "per-slice min-max from air up",
        ),
        Rendering(
            "clahe_256",
            lambda hu: resize(clahe(min_max(hu), CLAHE_EXPORT_CLIP), CLAHE_EXPORT_SIDE),
            "min-max, OpenCV CLAHE clip 7, 256 px (public notebooks)",
        ),
        Rendering("equalised", lambda hu: equalise(min_max(hu)), "min-max, histogram equalised"),
        Rendering(
            "original_exporter",
            min_max,
            "the original project's exporter: min-max over all stored values, upside down",
            turns=2,
            flip=True,
        ),
    )
}
"""The exporters ``lungseg evaluate`` scores, each saved as PNG and as JPEG."""

EVAL_JPEG_QUALITY = 75


def render_hu(hu: np.ndarray, rendering: Rendering, *, as_jpeg: bool) -> np.ndarray:
    """A HU slice as the named exporter saves it (8-bit, possibly turned), PNG or JPEG."""
    from lungseg.imaging.orientation import apply_dihedral

    picture = apply_dihedral(rendering.make(hu), rendering.turns, rendering.flip)
    return jpeg(picture, EVAL_JPEG_QUALITY) if as_jpeg else picture
