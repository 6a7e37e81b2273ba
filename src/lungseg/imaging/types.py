"""What the readers return: pixels plus the geometry and intensity kind they carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np


class Intensity(StrEnum):
    """What the pixel values mean."""

    HU = "hu"
    """Hounsfield units (int16): air -1000, water 0, bone several hundred."""
    DISPLAY = "display"
    """8-bit display values 0..255 of an already windowed image (PNG/JPG photos, screenshots)."""
    LABEL = "label"
    """Integer labels of a mask."""


@dataclass(frozen=True)
class Geometry:
    """Where the pixels sit in the patient.

    Attributes:
        spacing: pixel size in mm, in array axis order: ``(row, col)`` for a slice,
            ``(slice, row, col)`` for a volume; ``None`` where the file does not say
            (PNG/JPG/TIFF photos).
        affine: 4x4 matrix from voxel index ``(col, row, slice)`` to patient
            coordinates in mm, RAS+ (NIfTI convention); ``None`` where unknown.
        orientation: axis codes of the array's ``(col, row, slice)`` axes, e.g.
            ``"LPS"``: columns run to the patient's left, rows to posterior, slices
            to superior. That is the radiological view every reader returns for
            axial images. ``"unknown"`` for photos, which are taken as shown.
        nifti_header: a NIfTI volume's own header (nibabel's), so that its masks are
            written on its grid: its shape, voxel order, affine, qform and sform.
        dicom_headers: a DICOM series' headers (pydicom datasets without pixel data)
            in stored order (sorted by position along the slice normal), so that a
            DICOM Segmentation can refer to each source image.
        stored_affine: RAS+ affine of a DICOM series' stored grid ``(col, row, k)``
            with ``k`` the index into ``dicom_headers``.
        instance_numbers: a DICOM series' InstanceNumber of each slice, in the
            array's (display) slice order; empty where unknown.
    """

    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = field(default=None, compare=False)
    orientation: str = "unknown"
    nifti_header: Any = field(default=None, compare=False, repr=False)
    dicom_headers: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    stored_affine: np.ndarray | None = field(default=None, compare=False, repr=False)
    instance_numbers: tuple[int | None, ...] = field(default=(), compare=False, repr=False)

    def slice_z(self, count: int) -> list[float] | None:
        """Each display slice's position along the patient's feet-to-head axis (mm,
        the affine's z), or ``None`` without an affine."""
        if self.affine is None:
            return None
        return [float(self.affine[2, 2] * k + self.affine[2, 3]) for k in range(count)]


@dataclass(frozen=True)
class CTImage:
    """A CT slice ``(rows, cols)`` or volume ``(slices, rows, cols)`` as read from a file.

    Attributes:
        array: int16 for ``Intensity.HU``, uint8 for ``DISPLAY`` and ``LABEL``.
        geometry: spacing (mm), affine and orientation.
        intensity: what the values mean.
        source: the file or DICOM folder it came from.
        notes: how the reader decided anything it had to guess (shown in reports).
        not_ct: what the file itself says this is where that is not a CT image (a
            colour photograph, a DICOM radiograph), else ``None``.
    """

    array: np.ndarray
    geometry: Geometry
    intensity: Intensity
    source: Path
    notes: tuple[str, ...] = ()
    not_ct: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3

    def slices(self) -> np.ndarray:
        """The array as a stack ``(n, rows, cols)``; a single slice gives ``n == 1``."""
        return self.array if self.is_volume else self.array[np.newaxis]
