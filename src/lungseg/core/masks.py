"""Post-processing of predicted lung masks, as plain functions.

Like the established tools: keep the lung components and drop specks, fill
holes, never call anything outside the patient's body lung, and label the
patient's right and left lung apart (with a fallback where the lungs touch).
Every function takes a slice ``(rows, cols)`` or a volume ``(slices, rows, cols)``
in the radiological view the readers return (patient's right on the image's left).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT, LUNG_SIDE_UNKNOWN
from lungseg.core.morphology import component_sizes, fill_holes, label, lookup

MIN_COMPONENT_SHARE = 0.01
"""Components smaller than this share of the largest one are specks."""
VOLUME_COMPONENT_SHARE = 0.1
"""In a volume, 3D components below this share of the largest are not lung: gas in the
stomach or bowel below the diaphragm does not connect in 3D to the lungs."""
SINGLE_LUNG_WIDTH = 0.45
"""A slice's only lung region narrower than this share of the image is one lung (apex, base)."""
SINGLE_LUNG_OFF_CENTRE = 0.08
"""... if its centre lies at least this share of the image width off the image's middle."""
BOX_MARGIN = 16
"""Pixels around the unsided ones searched for the nearest side."""
SUBSTANTIAL = 0.1
"""A region of at least this share of the largest is a lung (or a lung's part), not a speck."""
MIXED_SIDE_SHARE = 0.25
"""A slice's connected lung region that cannot be split in two lungs (``split_touching``)
and whose minority side is below this share takes its majority side (one lung)."""
NECK_SHARE = 0.5
"""Two lungs touch through a neck: a region is two lungs where the pixels deeper than
some depth fall into two substantial cores, that depth at most this share of each
core's own deepest pixel (a lung's narrow waist stays one lung)."""
SECOND_LUNG_SHARE = 0.2
"""... and the smaller core's part holds at least this share of the larger one's."""


def clean_lung_mask(
    lung: np.ndarray,
    body: np.ndarray | None = None,
    *,
    min_component_share: float = MIN_COMPONENT_SHARE,
) -> np.ndarray:
    """Binary lung mask with specks removed, holes filled and nothing outside ``body``.

    Args:
        lung: non-zero where the model says lung.
        body: the patient's cross-section(s), same shape; ``None`` keeps everything.
        min_component_share: components (connected in 3D for volumes) smaller than
            this share of the largest are dropped.
    """
    return _cleaned(lung, body, min_component_share)[0]


def _cleaned(
    lung: np.ndarray, body: np.ndarray | None, min_component_share: float
) -> tuple[np.ndarray, bool]:
    """``clean_lung_mask``, and whether what is kept is one connected piece (a filled
    hole touches the piece around it, so the filled mask is one piece too)."""
    mask = lung != 0
    if body is not None:
        mask &= body
    labels, count = label(mask)
    kept = count
    if count > 1:
        sizes = component_sizes(labels, count)
        sizes[0] = 0
        keep = sizes >= min_component_share * sizes.max()
        keep[0] = False
        kept = int(keep.sum())
        mask = lookup(keep, labels)
    return fill_holes(mask), kept == 1


def split_left_right(lung: np.ndarray) -> np.ndarray:
    """Label a binary lung mask ``LUNG_RIGHT`` (1) and ``LUNG_LEFT`` (2).

    Where the two largest components are both substantial, each component goes
    to the side of the nearer of the two (by mean column). Where the lungs touch
    and form one component, the mask is cut at the column with the least lung
    within the middle 40 % of the lungs' width: the mediastinum.

    Returns:
        uint8 labels of ``lung``'s shape.
    """
    box = bounding_box(lung)  # the rule depends on the lung alone: work in its box
    out = np.zeros(lung.shape, dtype=np.uint8)
    if box is not None:
        out[box] = _split_left_right(lung[box] != 0)
    return out


def _split_left_right(mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=np.uint8)
    on_columns = np.flatnonzero(mask.any(axis=tuple(range(mask.ndim - 1))))
    labels, count = label(mask)
    sizes = component_sizes(labels, count)[1:]
    order = np.argsort(sizes)[::-1]
    if count >= 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        column_sums = np.zeros(count + 1)
        column_index = np.arange(mask.shape[-1], dtype=float)
        for plane in labels.reshape(-1, *mask.shape[-2:]):  # a plane at a time: little memory
            weights = np.broadcast_to(column_index, plane.shape).ravel()
            column_sums += np.bincount(plane.ravel(), weights=weights, minlength=count + 1)
        column_sums = column_sums[1:]
        centres = column_sums / sizes
        right_centre, left_centre = sorted(centres[order[:2]])
        near_right = np.abs(centres - right_centre) <= np.abs(centres - left_centre)
        side = np.concatenate([[0], np.where(near_right, LUNG_RIGHT, LUNG_LEFT)]).astype(np.uint8)
        return lookup(side, labels)
    cut = _mediastinum_column(mask, int(on_columns[0]), int(on_columns[-1]))
    column_index = np.arange(mask.shape[-1])
    out[mask & (column_index < cut)] = LUNG_RIGHT
    out[mask & (column_index >= cut)] = LUNG_LEFT
    return out


def _mediastinum_column(mask: np.ndarray, first: int, last: int) -> int:
    profile = mask.reshape(-1, mask.shape[-1]).sum(axis=0)
    width = last - first + 1
    low, high = first + int(0.3 * width), first + int(0.7 * width) + 1
    return low + int(np.argmin(profile[low:high]))


def lung_measures(labels: np.ndarray, spacing: tuple[float, ...] | None) -> dict[str, float]:
    """Right, left and total lung size: mL for a volume, mm² for a slice, pixels without spacing.

    Args:
        labels: ``LUNG_RIGHT``/``LUNG_LEFT`` labels (any other non-zero counts in the total only).
        spacing: mm per pixel in array axis order, or ``None``.
    """
    counts = {
        "right": float((labels == LUNG_RIGHT).sum()),
        "left": float((labels == LUNG_LEFT).sum()),
        "total": float((labels != 0).sum()),
    }
    if spacing is None:
        return counts
    unit = float(np.prod(spacing[-labels.ndim :]))  # mm² or mm³ per pixel
    scale = unit / 1000.0 if labels.ndim == 3 else unit  # 1 mL = 1000 mm³
    return {name: value * scale for name, value in counts.items()}


def clean_lung_labels(
    labels: np.ndarray, body: np.ndarray | None = None, *, in_place: bool = False
) -> np.ndarray:
    """Final lung labels (0, ``LUNG_RIGHT``, ``LUNG_LEFT``) from a model's raw labels.

    The lung (any non-zero label) is cleaned by ``clean_lung_mask``: in a volume
    only what connects in 3D to the lungs stays (``VOLUME_COMPONENT_SHARE``). Sides:
    where the raw labels carry them (a model that tells the lungs apart by anatomy),
    filled holes take the side of the nearest lung pixel and a region that is mostly
    one side becomes that side; where they do not (``LUNG_SIDE_UNKNOWN``, a model
    with one lung class), ``split_left_right`` decides by position.

    Args:
        labels: ``(rows, cols)`` or ``(slices, rows, cols)`` raw labels.
        body: the patient's cross-section(s), or ``None``.
        in_place: write the result into ``labels`` (no second array of a scan's size).

    Works inside the bounding box of the raw lung only (every step depends on the
    lung's own geometry, none on the image frame), which on a scan is a fraction
    of the voxels and of the memory.
    """
    box = bounding_box(labels)
    out = labels if in_place else np.zeros(labels.shape, dtype=np.uint8)
    if box is not None:
        out[box] = _clean_labels(labels[box], None if body is None else body[box])
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero pixel of ``mask`` (``None`` if there is
    none); a volume is read a plane at a time, with no temporary of its size."""
    if mask.ndim == 3:
        planes = np.flatnonzero([plane.any() for plane in mask])
        if not planes.size:
            return None
        footprint = np.zeros(mask.shape[1:], bool)
        for plane in mask[planes[0] : planes[-1] + 1]:
            footprint |= plane != 0
        inner = bounding_box(footprint)
        assert inner is not None
        return (slice(int(planes[0]), int(planes[-1]) + 1), *inner)
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _clean_labels(labels: np.ndarray, body: np.ndarray | None) -> np.ndarray:
    share = VOLUME_COMPONENT_SHARE if labels.ndim == 3 else MIN_COMPONENT_SHARE
    mask, one_piece = _cleaned(labels, body, share)
    if not mask.any():
        return np.zeros(labels.shape, dtype=np.uint8)
    if (labels == LUNG_SIDE_UNKNOWN).any():
        return split_left_right(mask)
    sides = np.where(mask, labels, 0).astype(np.uint8)
    _fill_unsided(mask, sides)
    if one_piece:  # its regions are known without labelling it again
        return _majority_sides(mask, sides, mask.astype(np.uint16), 1)
    return _majority_sides(mask, sides)


def _fill_unsided(mask: np.ndarray, sides: np.ndarray) -> None:
    """Give lung pixels without a side (filled holes) one, in place: the side that encloses
    them, else the nearest side (a distance transform over their bounding box only)."""
    unsided = mask & (sides == 0)
    if not unsided.any():
        return
    # only the planes with pixels to fill (filling holes is plane by plane)
    planes = np.flatnonzero(unsided.reshape(-1, *unsided.shape[-2:]).any(axis=(1, 2)))
    flat_sides = sides.reshape(-1, *sides.shape[-2:])
    flat_unsided = unsided.reshape(-1, *unsided.shape[-2:])
    for index in planes:
        plane = flat_sides[index]
        for side in (LUNG_RIGHT, LUNG_LEFT):
            plane[flat_unsided[index] & fill_holes(plane == side)] = side
    unsided = mask & (sides == 0)
    if not unsided.any():
        return
    where = np.nonzero(unsided)
    box = tuple(
        slice(max(int(axis.min()) - BOX_MARGIN, 0), int(axis.max()) + BOX_MARGIN + 1)
        for axis in where
    )
    local = sides[box]
    if not local.any():  # no side near enough: leave it to the region's majority
        local[unsided[box]] = LUNG_RIGHT
        return
    _, nearest = ndi.distance_transform_edt(local == 0, return_indices=True)
    inside = unsided[box]
    local[inside] = local[tuple(index[inside] for index in nearest)]


def _majority_sides(
    mask: np.ndarray,
    sides: np.ndarray,
    regions: np.ndarray | None = None,
    count: int = 0,
) -> np.ndarray:
    """Whole lungs from the model's per-pixel sides.

    Two (or more) substantial separate regions are two lungs: the two largest take
    opposite sides, whichever way agrees with more of the model's pixels (so a model
    unsure on one lung is overruled by the other); further regions take their own
    majority. On a slice, one region that ``split_touching`` cuts in two is two lungs
    that touch (in front of the heart, as on a tight crop), sided as two separate
    ones. Otherwise one region keeps the model's side pixel by pixel, its stray specks
    given to the other side; on a slice, a region whose minority side is below
    ``MIXED_SIDE_SHARE`` is one lung (an apex, a base) and takes its majority side.
    ``regions``, ``count``: the regions of ``mask`` where already known.
    """
    if regions is None:
        regions, count = label(mask)
    sizes = component_sizes(regions, count, mask)  # lung pixels only: fast
    right = component_sizes(regions, count, sides == LUNG_RIGHT)
    left = component_sizes(regions, count, sides == LUNG_LEFT)
    verdict = np.where(right >= left, LUNG_RIGHT, LUNG_LEFT).astype(np.uint8)
    verdict[0] = 0
    order = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i] >= SUBSTANTIAL * sizes.max()]
    if len(order) == 1 and mask.ndim == 2:  # one region: two lungs that touch?
        parts = split_touching(regions == order[0])
        if parts is not None:  # each lung a region of its own, the rest as they were
            regions = np.where(parts == 0, regions, 0).astype(regions.dtype)
            regions[parts == 1] = order[0]
            regions[parts == 2] = count + 1
            return _majority_sides(mask, sides, regions, count + 1)
    if len(order) >= 2:
        first, second = order[:2]
        as_is = right[first] + left[second] >= left[first] + right[second]
        verdict[first], verdict[second] = (
            (LUNG_RIGHT, LUNG_LEFT) if as_is else (LUNG_LEFT, LUNG_RIGHT)
        )
        return lookup(verdict, regions)
    if not order:
        return lookup(verdict, regions)
    lung = order[0]
    if mask.ndim == 2 and min(right[lung], left[lung]) < MIXED_SIDE_SHARE * sizes[lung]:
        return lookup(verdict, regions)
    out = np.where(regions == lung, sides, lookup(verdict, regions)).astype(np.uint8)
    for side, other in ((LUNG_RIGHT, LUNG_LEFT), (LUNG_LEFT, LUNG_RIGHT)):
        pieces, n = label(out == side)
        piece_sizes = component_sizes(pieces, n)
        piece_sizes[0] = 0
        stray = piece_sizes < SUBSTANTIAL * piece_sizes.max()
        stray[0] = False
        out[lookup(stray, pieces)] = other
    return out


def split_touching(region: np.ndarray) -> np.ndarray | None:
    """A slice's one connected lung region cut into two lungs where they touch, or
    ``None`` where it is one lung.

    The pixels deeper inside the region than a depth ``t`` (distance to its edge) form
    cores; ``t`` grows until two substantial cores appear, each at least
    ``1 / NECK_SHARE`` times deeper than ``t`` (two lungs joined by a neck, not a lung
    pinched at a fissure). Every pixel then joins the core it lies nearest. Orientation
    plays no part, so a turned photo splits as an upright one.

    Returns:
        labels 0 (outside), 1 and 2 (the two lungs, the larger 1), or ``None``.
    """
    box = bounding_box(region)
    if box is None:
        return None
    local = np.pad(region[box], 1)
    depth = ndi.distance_transform_edt(local)
    deepest = float(depth.max())
    # the cores at depth t lie within the rows and columns whose deepest pixel is deeper
    # than t: each depth is labelled in that shrinking window only (the same components,
    # numbered in the same order)
    row_depth, col_depth = depth.max(axis=1), depth.max(axis=0)
    for threshold in np.arange(1.0, NECK_SHARE * deepest + 1e-6):
        rows = np.flatnonzero(row_depth > threshold)
        cols = np.flatnonzero(col_depth > threshold)
        window = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        cores_in_window, count = label(depth[window] > threshold)
        if count < 2:
            continue
        sizes = component_sizes(cores_in_window, count)
        sizes[0] = 0
        first, second = (int(i) for i in np.argsort(sizes)[::-1][:2])
        if sizes[second] < SUBSTANTIAL * sizes[first]:
            continue
        cores = np.zeros(depth.shape, cores_in_window.dtype)
        cores[window] = cores_in_window
        in_first, in_second = cores == first, cores == second
        # each core's deepest pixel (ndi.maximum gives the same, many times slower)
        core_depth = (float(depth[in_first].max()), float(depth[in_second].max()))
        if threshold > NECK_SHARE * min(core_depth):
            return None
        seeds = in_first.view(np.uint8) + 2 * in_second.view(np.uint8)
        _, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        flat = nearest[0] * seeds.shape[1] + nearest[1]  # each pixel's nearest seed pixel
        parts = np.where(local, np.take(seeds.ravel(), flat), 0).astype(np.uint8)
        part_sizes = np.bincount(parts.ravel(), minlength=3)
        if min(part_sizes[1:]) < SECOND_LUNG_SHARE * max(part_sizes[1:]):
            return None
        if part_sizes[2] > part_sizes[1]:
            parts = np.array([0, 2, 1], np.uint8)[parts]
        out = np.zeros(region.shape, np.uint8)
        out[box] = parts[1:-1, 1:-1]
        return out
    return None


def side_agreement(sides: np.ndarray, reference: np.ndarray) -> float:
    """Share of lung pixels found in both whose side agrees (1.0 where none overlap)."""
    both = (sides != 0) & (reference != 0)
    if not both.any():
        return 1.0
    return float((sides[both] == reference[both]).mean())


def reference_sides(lung: np.ndarray) -> np.ndarray:
    """Reference labels 0 / 1 right lung / 2 left lung of a labelled slice (training, scoring) in the upright
    radiological view (patient's right on the image's left).

    Sources that label the lungs apart keep their sides. For one-label masks the
    sides are taken by position: two lungs by ``split_left_right``; a slice with
    one narrow lung region off the middle (an apex or base level, one lung
    collapsed) is that side's lung, not cut in two.
    """
    if np.isin(lung, (0, LUNG_RIGHT, LUNG_LEFT)).all():
        return lung.astype(np.uint8)
    mask = lung != 0
    regions, count = label(mask)
    if count:
        sizes = component_sizes(regions, count)[1:]
        substantial = sizes >= 0.1 * sizes.max()
        columns = np.nonzero(mask)[1]
        width = mask.shape[1]
        span = (columns.max() - columns.min() + 1) / width
        centre = columns.mean() / width - 0.5
        one_lung = substantial.sum() == 1 and span < SINGLE_LUNG_WIDTH
        if one_lung and abs(centre) >= SINGLE_LUNG_OFF_CENTRE:
            side = LUNG_RIGHT if centre < 0 else LUNG_LEFT
            return (mask * side).astype(np.uint8)
    return split_left_right(mask)
