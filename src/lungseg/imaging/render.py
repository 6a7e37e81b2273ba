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
training draws random ones (``training.augment``). Numpy and Pillow only, so
``lungseg evaluate`` runs on the core install.
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
    """Contrast-limited adaptive histogram equalisation of an 8-bit picture, pixel for
    pixel as OpenCV's ``createCLAHE(clip_limit, (tiles, tiles)).apply`` computes it (a
    test compares them), without OpenCV: a histogram per tile (the picture padded by
    reflection to a multiple of the grid), clipped at ``clip_limit`` times the mean
    count and the excess spread evenly, its cumulative sum as the tile's lookup table,
    and each pixel the bilinear mix of its four nearest tiles' tables."""
    grey = np.asarray(grey, dtype=np.uint8)
    rows, columns = grey.shape
    padded = np.pad(grey, ((0, -rows % tiles), (0, -columns % tiles)), mode="reflect")
    tile_rows, tile_columns = padded.shape[0] // tiles, padded.shape[1] // tiles
    area = tile_rows * tile_columns
    blocks = padded.reshape(tiles, tile_rows, tiles, tile_columns).transpose(0, 2, 1, 3)
    offsets = np.arange(tiles * tiles, dtype=np.int64).reshape(tiles, tiles, 1, 1) * 256
    histograms = np.bincount((blocks + offsets).ravel(), minlength=tiles * tiles * 256)
    histograms = histograms.reshape(tiles * tiles, 256)
    if clip_limit > 0:
        limit = max(int(clip_limit * area / 256), 1)
        excess = np.maximum(histograms - limit, 0).sum(axis=1)
        histograms = np.minimum(histograms, limit) + (excess // 256)[:, None]
        for tile, left in enumerate(excess % 256):
            if left:  # the remainder one count each, every (256 // left)-th level
                histograms[tile, np.arange(0, 256, max(256 // int(left), 1))[: int(left)]] += 1
    scale = np.float32(255.0 / area)
    tables = np.rint(np.cumsum(histograms, axis=1).astype(np.float32) * scale)
    tables = np.clip(tables, 0, 255).astype(np.float32).reshape(tiles, tiles, 256)

    def neighbours(size: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.arange(size, dtype=np.float32) * np.float32(1.0 / tile) - np.float32(0.5)
        first = np.floor(position).astype(np.int64)
        weight = (position - first).astype(np.float32)
        return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight

    y1, y2, wy = neighbours(rows, tile_rows)
    x1, x2, wx = neighbours(columns, tile_columns)
    y1, y2, wy = y1[:, None], y2[:, None], wy[:, None]
    top = tables[y1, x1, grey] * (1 - wx) + tables[y1, x2, grey] * wx
    bottom = tables[y2, x1, grey] * (1 - wx) + tables[y2, x2, grey] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


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
            "min-max, CLAHE clip 7 as OpenCV computes it, 256 px (public notebooks)",
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
