"""Segmentation metrics without torch: every score from one confusion count.

Conventions: a slice without foreground predicted without it scores Dice = IoU =
precision = recall = 1 (an empty answer to an empty question is right); HD95 is
undefined (NaN) where either mask is empty. Training, evaluation and the benchmarks
all score with these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of a binary prediction against its reference: floats or arrays (one
    count per slice of a batch)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    @classmethod
    def of(
        cls, prediction: np.ndarray, truth: np.ndarray, axes: tuple[int, ...] | None = None
    ) -> Confusion:
        """Counts over ``axes`` (all by default) of two masks; non-zero is foreground."""
        pred, true = np.asarray(prediction) != 0, np.asarray(truth) != 0
        if pred.shape != true.shape:
            raise ValueError(f"prediction {pred.shape} and reference {true.shape} differ in shape")
        return cls(
            np.asarray(np.sum(pred & true, axis=axes, dtype=np.float64)),
            np.asarray(np.sum(pred & ~true, axis=axes, dtype=np.float64)),
            np.asarray(np.sum(~pred & true, axis=axes, dtype=np.float64)),
            np.asarray(np.sum(~pred & ~true, axis=axes, dtype=np.float64)),
        )

    def dice(self) -> np.ndarray:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, empty=1.0)

    def iou(self) -> np.ndarray:
        return _ratio(self.tp, self.tp + self.fp + self.fn, empty=1.0)

    def precision(self) -> np.ndarray:
        """Share of the predicted foreground that is right (1 where neither has any, 0
        where only the reference has some)."""
        both_empty = (self.tp + self.fp + self.fn) == 0
        return np.where(both_empty, 1.0, _ratio(self.tp, self.tp + self.fp, empty=0.0))

    def recall(self) -> np.ndarray:
        """Sensitivity: share of the reference foreground found (1 where neither has any,
        0 where only the prediction has some)."""
        both_empty = (self.tp + self.fp + self.fn) == 0
        return np.where(both_empty, 1.0, _ratio(self.tp, self.tp + self.fn, empty=0.0))

    def specificity(self) -> np.ndarray:
        return _ratio(self.tn, self.tn + self.fp, empty=1.0)

    def accuracy(self) -> np.ndarray:
        return _ratio(self.tp + self.tn, self.tp + self.fp + self.fn + self.tn, empty=1.0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, *, empty: float) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), empty
        )


def edges(mask: np.ndarray) -> np.ndarray:
    """The mask's own boundary pixels: the mask less its erosion (cross neighbourhood)."""
    mask = np.asarray(mask) != 0
    return mask & ~ndi.binary_erosion(mask)


def hd95(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None
) -> float:
    """The 95th percentile Hausdorff distance between two masks' boundaries (the larger
    of the two directions), in mm with ``spacing``, in pixels without; NaN where either
    mask is empty."""
    pred_edges, true_edges = edges(prediction), edges(truth)
    if not pred_edges.any() or not true_edges.any():
        return math.nan
    sampling = list(spacing) if spacing else None
    to_true = ndi.distance_transform_edt(~true_edges, sampling=sampling)[pred_edges]
    to_pred = ndi.distance_transform_edt(~pred_edges, sampling=sampling)[true_edges]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def slice_scores(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> dict[str, float]:
    """Dice, IoU, precision, recall and HD95 of one slice's masks.

    Args:
        prediction, truth: ``(rows, cols)``; non-zero is foreground.
        spacing: ``(row, col)`` pixel size in mm; HD95 is in pixels without it.
    """
    counts = Confusion.of(prediction, truth)
    return {
        "dice": float(counts.dice()),
        "iou": float(counts.iou()),
        "precision": float(counts.precision()),
        "recall": float(counts.recall()),
        "hd95": hd95(prediction, truth, spacing),
    }
