"""A scan's memory: a fixed part for the model's chunks in flight, and a few bytes per
voxel for the scan's own length, however long it is and however it arrives.

Measured with tracemalloc (numpy reports every array to it) around ``Predictor.predict``
of synthetic scans of two lengths, 128 x 128 slices and a 256 px stand-in model (so
a chunk's model inputs and scores weigh much more than its slices): the peak's growth
per voxel added says whether a copy of the scan is made (2 bytes a voxel stored as int16,
4 as float32), the peak of the shorter scan whether more slices than a chunk's share go
through the model at once. Neither bound is derived from ``inference.model.CHUNK``."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import ct_volume, write_dicom_series

from lungseg.inference import Predictor

PIPELINE_BYTES = 1.5
"""What segmenting may add per voxel to what reading holds: the uint8 mask (1 byte; the
clean-up works in place). A copy of the scan adds 2 (int16) or 4 (float32)."""
READ_BYTES = {"_as_array": 0.0, "_as_nifti": 2.0, "_as_dicom_series": 3.0}
"""What reading holds per voxel: nothing for an array the caller holds; the int16 volume
(2 bytes) for a file, a DICOM series also each file's header (about a byte a voxel on
these small 128 x 128 slices)."""
FIXED_MB = 64
"""The most the rest may take: the model's chunks in flight (about 50 MB today)."""
SHORT, LONG = 96, 288


def _peak(predict: Callable[[Predictor], object], predictor: Predictor) -> int:
    tracemalloc.start()
    try:
        predict(predictor)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _as_array(volume: np.ndarray, folder: Path) -> Callable[[Predictor], object]:
    return lambda predictor: predictor.predict(volume, spacing=(2.0, 0.7, 0.7))


def _as_nifti(volume: np.ndarray, folder: Path) -> Callable[[Predictor], object]:
    path = folder / "scan.nii.gz"
    xyz = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))
    nib.save(nib.Nifti1Image(xyz, np.diag([0.7, 0.7, 2.0, 1.0])), path)
    return lambda predictor: predictor.predict(path)


def _as_dicom_series(volume: np.ndarray, folder: Path) -> Callable[[Predictor], object]:
    write_dicom_series(folder / "series", volume, spacing=(2.0, 0.7, 0.7))
    return lambda predictor: predictor.predict(folder / "series")


@pytest.mark.slow
@pytest.mark.parametrize(
    "arrives", [_as_array, _as_nifti, _as_dicom_series], ids=lambda f: f.__name__
)
def test_a_scan_takes_a_fixed_part_and_a_few_bytes_per_voxel(
    arrives: Callable[[np.ndarray, Path], Callable[[Predictor], object]],
    tmp_path: Path,
    models_256: Path,
) -> None:
    predictor = Predictor(models_256, infection=False)
    peaks, voxels = [], []
    for slices in (SHORT, LONG):
        volume = ct_volume(slices=slices, size=128, lung_free=2)[0].astype(np.int16)
        folder = tmp_path / str(slices)
        folder.mkdir()
        predict = arrives(volume, folder)
        peaks.append(_peak(predict, predictor))
        voxels.append(volume.size)
    growth = (peaks[1] - peaks[0]) / (voxels[1] - voxels[0])
    allowed = READ_BYTES[arrives.__name__] + PIPELINE_BYTES
    assert growth <= allowed, f"{growth:.2f} bytes per voxel the length adds"
    fixed = peaks[0] - allowed * voxels[0]
    assert fixed <= FIXED_MB * 1e6, f"{fixed / 1e6:.0f} MB beside the scan"


@pytest.fixture(scope="module")
def models_256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import dark_is_lung_onnx

    return dark_is_lung_onnx(tmp_path_factory.mktemp("memory") / "model.onnx", size=256)


READ_BYTES_PER_VOXEL = {"dicom_series": 3.5, "nifti": 4.5}
"""The most reading may peak per voxel: a DICOM series is read plane by plane into one
int16 volume (2 bytes) beside each file's header (about 1 byte a voxel more on these
small 128 x 128 slices); a NIfTI stored in another orientation
than the radiological view is copied once into it while read (2 + 2)."""


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(READ_BYTES_PER_VOXEL))
def test_reading_a_scan_holds_it_once_as_int16(kind: str, tmp_path: Path) -> None:
    from lungseg.imaging import read_image

    arrives = _as_dicom_series if kind == "dicom_series" else _as_nifti
    peaks, voxels = [], []
    for slices in (SHORT, LONG):
        volume = ct_volume(slices=slices, size=128, lung_free=2)[0].astype(np.int16)
        folder = tmp_path / str(slices)
        folder.mkdir()
        arrives(volume, folder)
        path = folder / "series" if kind == "dicom_series" else folder / "scan.nii.gz"
        tracemalloc.start()
        try:
            image = read_image(path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert image.array.dtype == np.int16 and image.array.shape == volume.shape
        voxels.append(volume.size)
    growth = (peaks[1] - peaks[0]) / (voxels[1] - voxels[0])
    assert growth <= READ_BYTES_PER_VOXEL[kind], f"{growth:.2f} bytes per voxel"
