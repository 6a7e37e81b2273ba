"""Fast binary-mask steps used on every prediction (numpy look-up tables over SciPy labels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndi.label`` into uint16 where the components fit (half the memory of int32 on
    a scan), int32 where there are more than 65535 of them."""
    labels = np.empty(mask.shape, np.uint16)
    try:
        count = int(ndi.label(mask, output=labels))
    except RuntimeError:  # "insufficient bit-depth": more components than uint16 holds
        labels, count = ndi.label(mask)
    return labels, count


def component_sizes(labels: np.ndarray, count: int, where: np.ndarray | None = None) -> np.ndarray:
    """Pixels per label ``0..count`` (of the pixels ``where`` is true, if given).

    ``np.bincount`` (several times faster than ``ndi.sum``), a plane at a time: it
    converts its input to 8-byte integers, which for a whole scan would take eight
    times the labels' memory.
    """
    sizes = np.zeros(count + 1, np.int64)
    planes = labels.reshape(-1, *labels.shape[-2:]) if labels.ndim > 2 else [labels]
    chosen = (
        where.reshape(-1, *where.shape[-2:]) if where is not None and where.ndim > 2 else [where]
    )
    for index, plane in enumerate(planes):
        selected = plane if where is None else plane[chosen[index]]
        sizes += np.bincount(selected.ravel(), minlength=count + 1)
    return sizes


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]``, a plane at a time: numpy turns an index array into 8-byte
    integers first, which for a whole scan would take eight times its memory."""
    if labels.ndim <= 2:
        return table[labels]
    out = np.empty(labels.shape, table.dtype)
    flat_out = out.reshape(-1, *labels.shape[-2:])
    for index, plane in enumerate(labels.reshape(-1, *labels.shape[-2:])):
        flat_out[index] = table[plane]
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a 2D mask, or of each slice of a 3D stack.

    A hole is background not connected (4-neighbourhood) to the image border; the
    same result as ``ndi.binary_fill_holes``, several times faster. Only the mask's
    bounding box is labelled, with a frame of background around it: everything
    outside the box is background connected to the border, and so is the frame.
    """
    if mask.ndim == 3:
        out = np.empty(mask.shape, bool)
        for index, plane in enumerate(mask):
            out[index] = fill_holes(plane)
        return out
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    out = np.array(mask, dtype=bool)
    if not rows.size:
        return out
    box = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    framed = np.zeros((box[0].stop - box[0].start + 2, box[1].stop - box[1].start + 2), bool)
    framed[1:-1, 1:-1] = ~out[box]
    framed[0, :] = framed[-1, :] = framed[:, 0] = framed[:, -1] = True
    background, _ = label(framed)
    out[box] = background[1:-1, 1:-1] != background[0, 0]  # the frame is one component
    return out


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels of a 2D label map with a 4-neighbour of another label, or on the image's
    border: every label's outline at once (a mask's outline is ``mask & label_edges(mask)``)."""
    edge = np.ones(labels.shape, bool)
    edge[1:-1, 1:-1] = False
    across = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= across
    edge[:-1, :] |= across
    along = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= along
    edge[:, :-1] |= along
    return edge
