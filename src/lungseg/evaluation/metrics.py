"""Segmentation metrics: MONAI's implementations, one place for training and evaluation.

Conventions: a slice without lung predicted without lung scores Dice = IoU =
precision = recall = 1 (an empty answer to an empty question is right); HD95 is
undefined (NaN) where either mask is empty.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)


def as_onehot(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Binary ``(rows, cols)`` or ``(batch, rows, cols)`` to ``(batch, 2, rows, cols)``."""
    tensor = torch.as_tensor(np.asarray(mask) != 0 if isinstance(mask, np.ndarray) else mask != 0)
    if tensor.ndim == 2:
        tensor = tensor[None]
    lung = tensor.float()[:, None]
    return torch.cat([1.0 - lung, lung], dim=1)


def dice_iou(
    pred_onehot: torch.Tensor, true_onehot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slice lung Dice and IoU, shape ``(batch,)``."""
    dice = compute_dice(pred_onehot, true_onehot, include_background=False, ignore_empty=False)[
        :, 0
    ]
    iou = compute_iou(pred_onehot, true_onehot, include_background=False, ignore_empty=False)[:, 0]
    return dice, iou


def slice_scores(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> dict[str, float]:
    """Dice, IoU, precision, recall and HD95 of one slice's lung masks.

    Args:
        prediction, truth: ``(rows, cols)``; non-zero is lung.
        spacing: ``(row, col)`` pixel size in mm; HD95 is in pixels without it.
    """
    pred, true = as_onehot(prediction), as_onehot(truth)
    dice, iou = dice_iou(pred, true)
    pred_any, true_any = bool(np.any(prediction)), bool(np.any(truth))
    if not pred_any and not true_any:
        precision = recall = 1.0
    else:
        matrix = get_confusion_matrix(pred, true, include_background=False)
        precision = _finite(compute_confusion_matrix_metric("precision", matrix), 0.0)
        recall = _finite(compute_confusion_matrix_metric("sensitivity", matrix), 0.0)
    hd95 = math.nan
    if pred_any and true_any:
        with warnings.catch_warnings():  # MONAI warns about its own deprecated internal argument
            warnings.simplefilter("ignore", FutureWarning)
            hd95 = float(
                compute_hausdorff_distance(
                    pred,
                    true,
                    include_background=False,
                    percentile=95,
                    spacing=list(spacing) if spacing else None,
                )[0, 0]
            )
    return {
        "dice": float(dice[0]),
        "iou": float(iou[0]),
        "precision": precision,
        "recall": recall,
        "hd95": hd95,
    }


def _finite(value: torch.Tensor, default: float) -> float:
    number = float(value.flatten()[0])
    return number if math.isfinite(number) else default
