"""Bring volumes into one array order: axial slices in radiological view.

Every reader returns volumes as ``(slice, row, col)`` with columns running to the
patient's left, rows to posterior and slices from inferior to superior (axis
codes ``LPS`` for ``(col, row, slice)``). On screen that is the radiological
view: the patient's right lung on the image's left, anterior at the top. Only
axis flips and permutations are applied, never an interpolating rotation, and the
affine is updated so that every voxel keeps its place in the patient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from lungseg.imaging.types import Geometry

DISPLAY_AXCODES = ("L", "P", "S")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_display_order(data_xyz: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """Reorient a volume indexed ``(i, j, k)`` with a RAS+ affine to ``(slice, row, col)``.

    Args:
        data_xyz: voxels indexed as in the file (NIfTI order ``i, j, k``).
        affine_ras: 4x4 voxel-to-patient (mm, RAS+) matrix of ``data_xyz``.

    Returns:
        The array ``(slice, row, col)`` in ``LPS`` display order and its geometry
        (spacing ``(slice, row, col)`` in mm, updated affine).
    """
    transform = ornt_transform(io_orientation(affine_ras), axcodes2ornt(DISPLAY_AXCODES))
    data = apply_orientation(data_xyz, transform)
    affine = affine_ras @ inv_ornt_aff(transform, data_xyz.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # mm per step along i, j, k
    geometry = Geometry(
        spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        affine=affine,
        orientation="".join(aff2axcodes(affine)),
    )
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), geometry


def from_display_order(array_zyx: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The inverse view for writing NIfTI: ``(i, j, k)`` data and its RAS+ affine. The
    data is a view (Fortran-ordered, as NIfTI stores voxels): no copy of the volume."""
    if geometry.affine is None:
        raise ValueError("this image has no affine; it cannot be written as NIfTI")
    return np.transpose(array_zyx, (2, 1, 0)), geometry.affine


def to_source_grid(array_zyx: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Any]:
    """A volume in display order put back on its NIfTI source's own grid: the source's
    shape and voxel order (flips and permutations undone), and a copy of its header
    (affine, qform and sform kept) set for uint8 labels without scaling."""
    header = geometry.nifti_header.copy()
    data = _back_to(array_zyx, header.get_best_affine())
    expected = tuple(int(n) for n in header.get_data_shape()[:3])
    if data.shape != expected:
        raise ValueError(f"mask of shape {data.shape} does not fit the source's {expected}")
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    return data, header


def to_stored_order(array_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A DICOM series' volume in display order put back in the order it is stored:
    ``(k, row, col)`` with ``k`` the index into ``geometry.dicom_headers`` and each
    plane as its file stores its pixels."""
    if geometry.stored_affine is None or not geometry.dicom_headers:
        raise ValueError("this image is not a DICOM series")
    data = _back_to(array_zyx, geometry.stored_affine)
    expected = len(geometry.dicom_headers)
    if data.shape[2] != expected:
        raise ValueError(f"mask of {data.shape[2]} planes does not fit the series' {expected}")
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))


def _back_to(array_zyx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo ``to_display_order`` for data whose source grid has ``affine``: ``(i, j, k)``."""
    back = ornt_transform(axcodes2ornt(DISPLAY_AXCODES), io_orientation(affine))
    return apply_orientation(np.transpose(array_zyx, (2, 1, 0)), back)


# The 8 ways a slice photo can arrive: 4 quarter turns, each maybe mirrored.
# A slice exported from NIfTI by a reader that ignores the affine is one of them.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple(
    (k, flip) for flip in (False, True) for k in range(4)
)


def dihedral_name(turns: int, flip: bool) -> str:
    return ("mirror+" if flip else "") + ("upright" if turns == 0 else f"rot{90 * turns}")


def describe_turn(turns: int, flip: bool) -> str:
    """In words, for notes: "mirrored left-right and turned 90 degrees counter-clockwise"."""
    parts = ["mirrored left-right"] if flip else []
    if turns:
        parts.append(f"turned {90 * turns} degrees counter-clockwise")
    return " and ".join(parts) or "upright"


def apply_dihedral(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Mirror left-right (if ``flip``), then turn ``turns`` quarter turns counter-clockwise."""
    out = image[..., ::-1] if flip else image
    return np.ascontiguousarray(np.rot90(out, turns, axes=(-2, -1)))


def undo_dihedral(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of ``apply_dihedral``."""
    out = np.rot90(image, -turns, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if flip else out)


def _turn_index(picture: np.ndarray, upright: np.ndarray) -> int:
    return next(
        k
        for k, (turns, flip) in enumerate(DIHEDRAL)
        if np.array_equal(apply_dihedral(upright, turns, flip), picture)
    )


def _mirrored_turns() -> tuple[int, ...]:
    probe = np.arange(6).reshape(2, 3)
    return tuple(
        _turn_index(apply_dihedral(apply_dihedral(probe, turns, flip), 0, True), probe)
        for turns, flip in DIHEDRAL
    )


MIRRORED_TURN: tuple[int, ...] = _mirrored_turns()
"""``MIRRORED_TURN[k]``: the turn (index into ``DIHEDRAL``) of the mirror image of a
picture in turn ``k``."""
