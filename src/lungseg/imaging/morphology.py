"""Fast binary-mask steps used on every prediction (numpy look-up tables over SciPy labels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Pixels per label ``0..count`` (``np.bincount``: several times faster than ``ndi.sum``)."""
    return np.bincount(labels.ravel(), minlength=count + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a 2D mask, or of each slice of a 3D stack.

    A hole is background not connected (4-neighbourhood) to the image border; the
    same result as ``ndi.binary_fill_holes``, about three times faster.
    """
    if mask.ndim == 3:
        out = np.empty(mask.shape, bool)
        for index, plane in enumerate(mask):
            out[index] = fill_holes(plane)
        return out
    background, count = ndi.label(~mask)
    outside = np.zeros(count + 1, dtype=bool)
    outside[
        np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    ] = True
    outside[0] = False
    return ~outside[background]


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (or on the image edge)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return mask & ~inner
