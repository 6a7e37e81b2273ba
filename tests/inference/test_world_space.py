"""Every written mask lies on the patient's lungs in world coordinates.

A viewer (3D Slicer, ITK-SNAP, OHIF) places a mask by its own geometry, not by voxel
index: the NIfTI mask by its affine, the DICOM-SEG by each frame's plane position. Here
each mask is placed that way and the CT is sampled there from the input files alone
(``tests/world.py``): at least 99 % of the mask's voxels must fall inside the scan and
the CT under them must be lung (mean under -700 HU). The per-slice z of the JSON must
be the z of the slice with that instance number.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from synthetic import ct_slice, ct_volume, write_dicom_series, write_dicom_slice, write_nifti
from world import (
    dicom_sampler,
    nifti_mask_points,
    nifti_sampler,
    placement,
    seg_mask_points,
)

from lungseg.inference import Predictor, save_prediction
from lungseg.inference.result import SliceLung
from lungseg.serve.app import ServeSettings, create_app

INSIDE = 0.99
LUNG_HU = -700.0
ORIGIN = (-120.0, -95.0, -439.0)  # a series placed where real ones lie, far from 0


def assert_on_lungs(points: np.ndarray, sampler, what: str) -> None:  # type: ignore[no-untyped-def]
    inside, hu = placement(points, sampler)
    assert inside >= INSIDE, f"{what}: only {inside:.1%} of the mask lies inside the scan"
    assert hu < LUNG_HU, f"{what}: the CT under the mask averages {hu:.0f} HU, not lung"


def assert_z_of_instances(per_slice: list[SliceLung] | list[dict], files: list[Path]) -> None:
    """Each slice's z is its own file's z (ImagePositionPatient z: the same in LPS and RAS)."""
    z_of = {}
    for file in files:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        z_of[int(ds.InstanceNumber)] = float(ds.ImagePositionPatient[2])
    rows = [row if isinstance(row, dict) else row.model_dump() for row in per_slice]
    assert len(rows) == len(files)
    for row in rows:
        assert row["z_mm"] == pytest.approx(z_of[row["instance"]], abs=0.01), row
    numbers = [row["number"] for row in sorted(rows, key=lambda r: -r["z_mm"])]
    assert numbers == list(range(1, len(rows) + 1))  # numbered head to feet


def series(folder: Path, **geometry: object) -> list[Path]:
    hu, _ = ct_volume(slices=8, size=64, lung_free=1)
    return write_dicom_series(folder, hu, origin=ORIGIN, **geometry)  # type: ignore[arg-type]


def zipped(files: list[Path], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in files:
            archive.write(file, f"series/{file.name}")
    return path


SERIES = {
    "head-first": {},
    "feet-first": {"orientation": (-1, 0, 0, 0, 1, 0)},
    "rows-flipped": {"orientation": (1, 0, 0, 0, -1, 0)},
    "tilted-gantry": {"tilt": 15.0},
}


@pytest.mark.parametrize("kind", ["folder", "zip"])
@pytest.mark.parametrize("name", sorted(SERIES))
def test_a_dicom_series_masks_lie_on_its_lungs(
    tmp_path: Path, predictor: Predictor, name: str, kind: str
) -> None:
    files = series(tmp_path / "series", **SERIES[name])
    source = tmp_path / "series" if kind == "folder" else zipped(files, tmp_path / "s.zip")
    prediction = predictor.predict(source)
    save_prediction(prediction, tmp_path / "out", "scan")
    sampler = dicom_sampler(files)
    assert_on_lungs(nifti_mask_points(tmp_path / "out" / "scan_mask.nii.gz"), sampler, "NIfTI")
    assert_on_lungs(seg_mask_points(tmp_path / "out" / "scan_seg.dcm"), sampler, "DICOM-SEG")
    # volumes in mL from a voxel's true size (a tilted grid's voxels are sheared boxes)
    geometry = prediction.image.geometry
    assert geometry.spacing is not None and geometry.affine is not None
    voxel = abs(float(np.linalg.det(geometry.affine[:3, :3])))
    assert float(np.prod(geometry.spacing)) == pytest.approx(voxel, rel=1e-6)
    if name != "tilted-gantry":  # a tilted plane has no single z
        assert prediction.per_slice is not None
        assert_z_of_instances(prediction.per_slice, files)


def test_a_single_dicom_slice_is_placed_on_its_file(tmp_path: Path, predictor: Predictor) -> None:
    hu, _ = ct_slice(96)
    path = write_dicom_slice(tmp_path / "one.dcm", hu, z=-284.0, xy=ORIGIN[:2])
    prediction = predictor.predict(path)
    affine = prediction.image.geometry.affine
    rows, cols = np.nonzero(prediction.lung)
    points = np.stack([cols, rows, np.zeros_like(rows), np.ones_like(rows)], 1) @ affine.T
    assert_on_lungs(points[:, :3], dicom_sampler([path]), "slice")


NIFTI_AFFINES = {
    "RAS": np.array([[0.8, 0, 0, -25], [0, 0.8, 0, -30], [0, 0, 5, -400], [0, 0, 0, 1]]),
    "LPS": np.array([[-0.8, 0, 0, 25], [0, -0.8, 0, 30], [0, 0, 5, -400], [0, 0, 0, 1]]),
    "oblique": np.array(
        [
            [0.8 * np.cos(0.35), -0.8 * np.sin(0.35), 0, 10],
            [0.8 * np.sin(0.35), 0.8 * np.cos(0.35), 0, -40],
            [0, 0, 5, -400],
            [0, 0, 0, 1],
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(NIFTI_AFFINES))
def test_a_nifti_mask_lies_on_its_lungs(tmp_path: Path, predictor: Predictor, name: str) -> None:
    hu, _ = ct_volume(slices=8, size=64, lung_free=1)
    path = write_nifti(tmp_path / "scan.nii.gz", hu, NIFTI_AFFINES[name])
    prediction = predictor.predict(path)
    save_prediction(prediction, tmp_path / "out", "scan")
    mask = tmp_path / "out" / "scan_mask.nii.gz"
    assert_on_lungs(nifti_mask_points(mask), nifti_sampler(path), name)
    assert np.allclose(nib.load(str(mask)).affine, NIFTI_AFFINES[name])


def test_an_uploaded_series_answers_in_world_space(tmp_path: Path, predictor: Predictor) -> None:
    files = series(tmp_path / "series", **SERIES["feet-first"])
    archive = zipped(files, tmp_path / "series.zip").read_bytes()
    client = TestClient(create_app(ServeSettings(), predictor))
    sampler = dicom_sampler(files)
    for format, place in (("nifti", nifti_mask_points), ("seg", seg_mask_points)):
        answer = client.post(
            f"/api/v1/segment-volume?format={format}", files={"file": ("s.zip", archive)}
        )
        assert answer.status_code == 200, answer.text
        assert_on_lungs(place(answer.content), sampler, f"API {format}")
    answer = client.post("/api/v1/segment-volume", files={"file": ("s.zip", archive)})
    assert answer.status_code == 200, answer.text
    assert_z_of_instances(answer.json()["lung"]["per_slice"], files)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_the_real_series_masks_lie_on_its_lungs(
    tmp_path: Path, shared_data: Path, kind: str
) -> None:
    """The 64-slice Lung-PET-CT-Dx series with the shipped model: the NIfTI mask, the
    DICOM-SEG and each slice's z in its patient's frame (its files run head to feet from
    z -124 to -439, so an origin taken from the first file listed is 315 mm off)."""
    folder = shared_data / "chest-ct-dicom" / "Lung_Dx-A0001"
    files = sorted(folder.glob("*.dcm"))
    source = folder if kind == "folder" else zipped(files, tmp_path / "series.zip")
    prediction = Predictor().predict(source)
    save_prediction(prediction, tmp_path / "out", "scan")
    sampler = dicom_sampler(files)
    assert_on_lungs(nifti_mask_points(tmp_path / "out" / "scan_mask.nii.gz"), sampler, "NIfTI")
    assert_on_lungs(seg_mask_points(tmp_path / "out" / "scan_seg.dcm"), sampler, "DICOM-SEG")
    assert prediction.per_slice is not None
    assert_z_of_instances(prediction.per_slice, files)


def test_the_helpers_see_a_misplaced_mask(tmp_path: Path) -> None:
    """The check itself: the same mask 300 mm off is found outside the scan."""
    hu, lungs = ct_volume(slices=8, size=64, lung_free=1)
    path = write_nifti(tmp_path / "scan.nii.gz", hu, NIFTI_AFFINES["LPS"])
    moved = NIFTI_AFFINES["LPS"].copy()
    moved[2, 3] += 300
    buffer = io.BytesIO()
    mask = nib.Nifti1Image(np.transpose(lungs, (2, 1, 0)).astype(np.uint8), moved)
    buffer.write(mask.to_bytes())
    inside, _ = placement(nifti_mask_points(buffer.getvalue()), nifti_sampler(path))
    assert inside == 0.0
    mask = nib.Nifti1Image(np.transpose(lungs, (2, 1, 0)).astype(np.uint8), NIFTI_AFFINES["LPS"])
    inside, hu_under = placement(nifti_mask_points(mask.to_bytes()), nifti_sampler(path))
    assert inside == 1.0 and hu_under < LUNG_HU
