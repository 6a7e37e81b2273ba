"""World coordinates for tests, computed from the files alone (pydicom, nibabel, the
DICOM-SEG's own frames), never from lungseg's readers: where a written mask lands in
the patient, and what the CT holds there.

Every point is (x, y, z) in mm, RAS+ (NIfTI's convention; DICOM's LPS has x and y
negated)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

Sampler = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""World points (n, 3) -> (inside the scan: bool (n,), HU there: float (n,))."""


def dicom_sampler(files: list[Path]) -> Sampler:
    """The CT of a DICOM series by world position: each point goes to the slice whose plane
    lies nearest (within half the gap to its neighbours) and to that slice's pixel."""
    planes = []
    for file in files:
        ds = pydicom.dcmread(file)
        cosines = np.array(ds.ImageOrientationPatient, dtype=float)
        across, down = cosines[:3], cosines[3:]  # LPS directions of a column step, a row step
        normal = np.cross(across, down)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        hu = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        origin = np.array(ds.ImagePositionPatient, dtype=float)
        planes.append((origin, across, down, normal, row_mm, col_mm, hu))
    normal = planes[0][3]
    heights = np.array([float(np.dot(normal, p[0])) for p in planes])
    gap = float(np.median(np.diff(np.sort(heights)))) if len(planes) > 1 else 1.0

    def sample(points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lps = points_ras @ LPS_TO_RAS.T
        nearest = np.argmin(np.abs(lps @ normal - heights[:, None]), axis=0)
        inside = np.zeros(len(lps), bool)
        values = np.full(len(lps), np.nan)
        for index, (origin, across, down, plane_normal, row_mm, col_mm, hu) in enumerate(planes):
            chosen = np.flatnonzero(nearest == index)
            offset = lps[chosen] - origin
            near = np.abs(offset @ plane_normal) <= 0.5 * gap + 1e-3
            col = np.round(offset @ across / col_mm).astype(int)
            row = np.round(offset @ down / row_mm).astype(int)
            ok = near & (row >= 0) & (row < hu.shape[0]) & (col >= 0) & (col < hu.shape[1])
            inside[chosen[ok]] = True
            values[chosen[ok]] = hu[row[ok], col[ok]]
        return inside, values

    return sample


def nifti_sampler(path: Path) -> Sampler:
    """The CT of a NIfTI file by world position (its own best affine)."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=float)
    to_voxel = np.linalg.inv(img.affine)

    def sample(points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ijk = np.round(points_ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[:3])), axis=1)
        values = np.full(len(points_ras), np.nan)
        values[inside] = data[tuple(ijk[inside].T)]
        return inside, values

    return sample


def nifti_mask_points(data: bytes | Path) -> np.ndarray:
    """World points of a NIfTI mask's non-zero voxels, placed by its own affine (as 3D
    Slicer and ITK-SNAP place it)."""
    img = (
        nib.load(str(data)) if isinstance(data, Path) else nib.Nifti1Image.from_bytes(_gunzip(data))
    )
    ijk = np.argwhere(np.asarray(img.dataobj) > 0).astype(float)
    return ijk @ img.affine[:3, :3].T + img.affine[:3, 3]


def seg_mask_points(data: bytes | Path) -> np.ndarray:
    """World points of a DICOM Segmentation's segment pixels, placed by each frame's own
    plane position and the SEG's shared orientation and pixel size."""
    seg = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)
    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    points = []
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        origin = np.array(group.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        rows, cols = np.nonzero(frame)
        lps = origin + np.outer(cols * col_mm, cosines[:3]) + np.outer(rows * row_mm, cosines[3:])
        points.append(lps @ LPS_TO_RAS.T)
    return np.concatenate(points) if points else np.zeros((0, 3))


def placement(points_ras: np.ndarray, sampler: Sampler) -> tuple[float, float]:
    """(share of the points inside the scan, mean HU of the CT under those inside)."""
    assert len(points_ras), "no mask voxel to place"
    inside, values = sampler(points_ras)
    mean = float(np.nanmean(values[inside])) if inside.any() else float("nan")
    return float(inside.mean()), mean


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
