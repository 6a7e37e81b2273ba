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
    """

    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = field(default=None, compare=False)
    orientation: str = "unknown"
    nifti_header: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CTImage:
    """A CT slice ``(rows, cols)`` or volume ``(slices, rows, cols)`` as read from a file.

    Attributes:
        array: int16 for ``Intensity.HU``, uint8 for ``DISPLAY`` and ``LABEL``.
        geometry: spacing (mm), affine and orientation.
        intensity: what the values mean.
        source: the file or DICOM folder it came from.
        notes: how the reader decided anything it had to guess (shown in reports).
    """

    array: np.ndarray
    geometry: Geometry
    intensity: Intensity
    source: Path
    notes: tuple[str, ...] = ()

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3

    def slices(self) -> np.ndarray:
        """The array as a stack ``(n, rows, cols)``; a single slice gives ``n == 1``."""
        return self.array if self.is_volume else self.array[np.newaxis]
