"""Pre-processing shared by training, evaluation and prediction: one copy of it.

A slice of any size goes to the model as a square of ``size`` pixels: it is
padded to a square (centred, with the value that maps to 0 in the lung window,
so the padding looks like air) and resized. ``Placement`` remembers how, so that
the model's output goes back to the slice's own size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lungseg.imaging.intensity import HU_WINDOW
from lungseg.imaging.types import Intensity


@dataclass(frozen=True)
class Placement:
    """How a ``(rows, cols)`` slice sits in the padded square before resizing."""

    rows: int
    cols: int
    side: int  # the padded square's side
    top: int
    left: int


def pad_value(intensity: Intensity) -> float:
    """The value that means air below the lung window: -1250 HU, or 0 for display values."""
    return HU_WINDOW[0] if intensity is Intensity.HU else 0.0


def to_model_square(
    image: np.ndarray, size: int, *, fill: float = 0.0, nearest: bool = False
) -> tuple[np.ndarray, Placement]:
    """Pad ``image`` (rows, cols) to a centred square and resize it to ``size`` x ``size``.

    Args:
        image: any numeric 2D array (float32 unit intensities, HU or labels).
        size: the model's input side in pixels.
        fill: the padding value.
        nearest: nearest-neighbour resizing (for labels); bilinear otherwise.

    Returns:
        float32 ``(size, size)`` array (uint8 for ``nearest``) and its ``Placement``.
    """
    rows, cols = image.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    dtype = np.uint8 if nearest else np.float32
    square = np.full((side, side), fill, dtype=dtype)
    square[top : top + rows, left : left + cols] = image
    placement = Placement(rows, cols, side, top, left)
    if side == size:
        return square, placement
    if nearest:
        resized = Image.fromarray(square).resize((size, size), Image.Resampling.NEAREST)
    else:
        resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=dtype), placement


def from_model_square(maps: np.ndarray, placement: Placement) -> np.ndarray:
    """Bring ``(channels, size, size)`` maps back to the slice's ``(channels, rows, cols)``."""
    out = np.empty((maps.shape[0], placement.rows, placement.cols), dtype=np.float32)
    for channel, plane in enumerate(maps):
        square = plane.astype(np.float32)
        if plane.shape[0] != placement.side:
            resized = Image.fromarray(square).resize(
                (placement.side, placement.side), Image.Resampling.BILINEAR
            )
            square = np.asarray(resized, dtype=np.float32)
        top, left = placement.top, placement.left
        out[channel] = square[top : top + placement.rows, left : left + placement.cols]
    return out
