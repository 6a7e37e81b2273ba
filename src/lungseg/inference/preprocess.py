"""The one pre-processing pipeline: training, evaluation and prediction all call it.

A model's input contract (``Preprocessing``) is data stored in its card and read
back by ``SegmentationModel``. For any slice the deterministic steps run in one
order everywhere:

1. **intensity**: HU through the contract's window to [0, 1]; 8-bit display
   values divided by the contract's divisor;
2. **pad**: to a centred square with the contract's pad value (0: air, black);
3. **resize**: bilinearly to ``size`` x ``size``.

Training's random steps (renderings, turns, zoom, noise) sit on top: a rendering
makes an 8-bit picture before step 1, as a user's exporter would; spatial steps
change the square after step 3. ``Placement`` remembers the padding so that the
model's output goes back to the slice's own size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from lungseg.errors import LungsegError
from lungseg.imaging.intensity import HU_WINDOW, to_unit_range
from lungseg.imaging.types import Intensity

STEPS = ("intensity", "pad", "resize")


@dataclass(frozen=True)
class Preprocessing:
    """A model's input contract: how a slice becomes its input. Stored in the model card.

    Attributes:
        size: the square input side in pixels.
        hu_window: HU mapped to 0 and to 1 (clipped outside).
        display_divisor: 8-bit display values are divided by this.
        pad_value: the value (after step 1) that pads a slice to a square.
        resample: ``bilinear`` (the only one supported).
        steps: the order of the steps; always ``STEPS``.
    """

    size: int = 256
    hu_window: tuple[float, float] = HU_WINDOW
    display_divisor: float = 255.0
    pad_value: float = 0.0
    resample: str = "bilinear"
    steps: tuple[str, ...] = STEPS

    def __post_init__(self) -> None:
        problems = []
        if self.size < 8:
            problems.append(f"size {self.size} is below 8")
        if not self.hu_window[0] < self.hu_window[1]:
            problems.append(f"hu_window {self.hu_window} is not increasing")
        if self.display_divisor <= 0:
            problems.append(f"display_divisor {self.display_divisor} is not positive")
        if self.resample != "bilinear":
            problems.append(f"resample {self.resample!r} is not supported (bilinear)")
        if tuple(self.steps) != STEPS:
            problems.append(f"steps {list(self.steps)} differ from {list(STEPS)}")
        if problems:
            raise LungsegError("invalid pre-processing contract: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hu_window": list(self.hu_window), "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """A contract from a card's ``input.preprocessing``; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise LungsegError(f"unknown pre-processing settings: {', '.join(sorted(unknown))}")
        values = dict(values)
        if "hu_window" in values:
            low, high = values["hu_window"]
            values["hu_window"] = (float(low), float(high))
        if "steps" in values:
            values["steps"] = tuple(values["steps"])
        return cls(**values)

    def unit(self, image: np.ndarray, intensity: Intensity) -> np.ndarray:
        """Step 1: float32 in [0, 1] from HU or display values."""
        try:
            return to_unit_range(
                image, intensity, window=self.hu_window, divisor=self.display_divisor
            )
        except ValueError as error:
            raise LungsegError(f"cannot give the model {intensity.value} values") from error

    def prepare(self, image: np.ndarray, intensity: Intensity) -> tuple[np.ndarray, Placement]:
        """Steps 1-3: a ``(rows, cols)`` slice to the model's ``(size, size)`` float32 input."""
        return to_model_square(self.unit(image, intensity), self.size, fill=self.pad_value)


@dataclass(frozen=True)
class Placement:
    """How a ``(rows, cols)`` slice sits in the padded square before resizing."""

    rows: int
    cols: int
    side: int  # the padded square's side
    top: int
    left: int


def to_model_square(
    image: np.ndarray, size: int, *, fill: float = 0.0, nearest: bool = False
) -> tuple[np.ndarray, Placement]:
    """Pad ``image`` (rows, cols) to a centred square and resize it to ``size`` x ``size``.

    Args:
        image: any numeric 2D array (float32 unit intensities, or labels).
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
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    resized = Image.fromarray(square).resize((size, size), method)
    return np.asarray(resized, dtype=dtype), placement


def decision_at_slice_size(scores: np.ndarray, placement: Placement) -> np.ndarray:
    """The argmax class of ``(classes, size, size)`` scores (probabilities or logits),
    each brought back to the slice's ``(rows, cols)`` one class at a time (the same as
    ``from_model_square`` then argmax, ties to the first class, without holding every
    class at full size).

    Where the model's input was smaller than the slice (the usual case), only the
    window around what is not background at model size is resized: a bilinear sample is
    a weighted mean of its neighbours with non-negative weights (and rounding is
    monotonic), so where every neighbour's first-best class is background, the sample's
    is too. Pillow samples a window with weights equal to the whole square's up to float
    rounding, so a pixel whose two best classes tie to within about 1e-6 may go either
    way."""
    size = scores.shape[-1]
    if placement.side <= size or scores.shape[0] < 2:
        return _decide(
            scores, placement, placement.top, placement.left, placement.rows, placement.cols
        )
    found = scores[1:].max(axis=0) > scores[0]  # argmax is not 0 (ties go to 0); several
    # times faster than argmax across the class axis
    rows_found = np.flatnonzero(found.any(axis=1))
    cols_found = np.flatnonzero(found.any(axis=0))
    decision = np.zeros((placement.rows, placement.cols), np.uint8)
    if not rows_found.size:
        return decision
    scale = placement.side / size
    # two model pixels of margin: a sample reads the model pixels within one of its centre
    top, bottom = _window(rows_found, scale, size, placement.top, placement.rows)
    left, right = _window(cols_found, scale, size, placement.left, placement.cols)
    if top >= bottom or left >= right:
        return decision
    decision[
        top - placement.top : bottom - placement.top, left - placement.left : right - placement.left
    ] = _decide(scores, placement, top, left, bottom - top, right - left)
    return decision


def _window(found: np.ndarray, scale: float, size: int, start: int, length: int) -> tuple[int, int]:
    """Padded-square pixels ``[first, last)`` whose samples can read a model pixel in
    ``found`` (sorted indices), cut to the slice's ``[start, start + length)``."""
    low = max(int(found[0]) - 2, 0)
    high = min(int(found[-1]) + 3, size)
    first = math.floor(low * scale)
    last = math.ceil(high * scale)
    return max(first, start), min(last, start + length)


def _decide(
    scores: np.ndarray, placement: Placement, top: int, left: int, rows: int, cols: int
) -> np.ndarray:
    """The decision over the padded square's ``rows`` x ``cols`` pixels from ``(top, left)``."""
    best = _to_window(scores[0], placement, top, left, rows, cols)
    decision = np.zeros(best.shape, np.uint8)
    for index in range(1, scores.shape[0]):
        plane = _to_window(scores[index], placement, top, left, rows, cols)
        better = plane > best
        decision[better] = index
        np.maximum(best, plane, out=best)
    return decision


def _to_window(
    plane: np.ndarray, placement: Placement, top: int, left: int, rows: int, cols: int
) -> np.ndarray:
    """Pixels ``[top, top + rows) x [left, left + cols)`` of ``plane`` resized to the
    padded square: Pillow's ``box`` resizes just that window, with the very samples and
    weights of the whole square's resize."""
    square = plane.astype(np.float32, copy=False)
    if plane.shape[0] == placement.side:
        return square[top : top + rows, left : left + cols].copy()
    scale = plane.shape[0] / placement.side
    box = (left * scale, top * scale, (left + cols) * scale, (top + rows) * scale)
    resized = Image.fromarray(square).resize((cols, rows), Image.Resampling.BILINEAR, box=box)
    return np.array(resized, dtype=np.float32)  # a writable copy


def _to_slice(plane: np.ndarray, placement: Placement) -> np.ndarray:
    """The whole padded square resized, then the slice cut out of it."""
    square = plane.astype(np.float32)
    if plane.shape[0] != placement.side:
        resized = Image.fromarray(square).resize(
            (placement.side, placement.side), Image.Resampling.BILINEAR
        )
        square = np.asarray(resized, dtype=np.float32)
    top, left = placement.top, placement.left
    return square[top : top + placement.rows, left : left + placement.cols].copy()


def from_model_square(maps: np.ndarray, placement: Placement) -> np.ndarray:
    """Bring ``(channels, size, size)`` maps back to the slice's ``(channels, rows, cols)``."""
    return np.stack([_to_slice(plane, placement) for plane in maps])
