"""Synthetic CT-like slices and volumes, and writers for every source layout.

An axial slice: air (-1000 HU) around an elliptic body (40 HU) holding two lungs
(-850 HU) side by side and a spine (400 HU) behind them. The lung lying on the
image's left is the patient's right lung (radiological view).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ellipse(
    shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def ct_slice(
    size: int = 96, lung_scale: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One slice: (HU int16, source lung labels with 1 = image-left lung, 2 = image-right lung)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    hu = np.full(shape, -1000.0)
    body = ellipse(shape, (size * 0.5, size * 0.5), (size * 0.36, size * 0.45))
    hu[body] = 40.0
    labels = np.zeros(shape, dtype=np.uint8)
    if lung_scale > 0:
        radii = (size * 0.22 * lung_scale, size * 0.13 * lung_scale)
        left_image = ellipse(shape, (size * 0.48, size * 0.32), radii) & body
        right_image = ellipse(shape, (size * 0.48, size * 0.68), radii) & body
        hu[left_image | right_image] = -850.0
        labels[left_image] = 1
        labels[right_image] = 2
    hu[ellipse(shape, (size * 0.78, size * 0.5), (size * 0.06, size * 0.05))] = 400.0
    hu += rng.normal(0, 15, shape)
    return np.round(np.clip(hu, -1024, None)).astype(np.int16), labels  # scanners floor at -1024


def ct_volume(slices: int = 8, size: int = 64, lung_free: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A volume (slices, rows, cols): ``lung_free`` slices without lung at each end."""
    images, masks = [], []
    for index in range(slices):
        inside = lung_free <= index < slices - lung_free
        scale = 0.6 + 0.4 * np.sin(np.pi * (index + 0.5) / slices) if inside else 0.0
        image, mask = ct_slice(size, scale, seed=index)
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def display_slice(hu: np.ndarray) -> np.ndarray:
    """HU through the lung window [-1250, 250] to 0..255 (like the Radiopaedia volumes)."""
    return np.clip(np.round((hu.astype(float) + 1250) / 1500 * 255), 0, 255).astype(np.uint8)


# --- writers ----------------------------------------------------------------------

# Voxel (i, j, k) -> RAS mm for an array stored as (col, row, slice) in LPS display
# order: i runs to the patient's left (-x in RAS), j to posterior (-y), k superior.
LPS_AFFINE = np.diag([-0.8, -0.8, 5.0, 1.0])


def write_nifti(path: Path, volume_zyx: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    """Write a (slice, row, col) volume as NIfTI; ``affine`` is for (col, row, slice)."""
    data = np.transpose(volume_zyx, (2, 1, 0))
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def write_tiff_hu(path: Path, hu: np.ndarray) -> Path:
    Image.fromarray(hu.astype(np.int32)).save(path)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def write_dicom_series(
    folder: Path,
    hu_zyx: np.ndarray,
    spacing: tuple[float, float, float] = (5.0, 0.8, 0.8),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    *,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    tilt: float = 0.0,
) -> list[Path]:
    """Write an axial DICOM series (stored values = HU + 1024), file names shuffled,
    instance numbers from the head down (as many scanners number them). Plane ``index``
    lies ``index * spacing[0]`` mm above ``origin`` (LPS), along z whatever the plane's
    orientation; ``tilt`` (degrees) tilts the planes about the x axis, as a tilted gantry
    does (``orientation`` is then ignored): the slices are then not stacked along their
    planes' normal."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(1).permutation(hu_zyx.shape[0])
    if tilt:
        angle = np.radians(tilt)
        orientation = (1, 0, 0, 0, float(np.cos(angle)), float(np.sin(angle)))
    paths = []
    for index, name in zip(range(hu_zyx.shape[0]), order, strict=True):
        path = folder / f"img{name:03d}.dcm"
        write_dicom_slice(
            path,
            hu_zyx[index],
            z=origin[2] + index * spacing[0],
            xy=origin[:2],
            pixel=spacing[1:],
            series_uid=series_uid,
            study_uid=study_uid,
            frame_uid=frame_uid,
            orientation=orientation,
            instance=hu_zyx.shape[0] - index,
        )
        paths.append(path)
    return paths


def write_dicom_slice(
    path: Path,
    hu: np.ndarray,
    *,
    z: float = 0.0,
    xy: tuple[float, float] = (0.0, 0.0),
    pixel: tuple[float, float] = (0.8, 0.8),
    series_uid: str | None = None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    study_uid: str | None = None,
    frame_uid: str | None = None,
    instance: int = 1,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_uid or generate_uid()
    ds.InstanceNumber = instance
    ds.SeriesNumber = 1
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTHETIC-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "lungseg tests"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [pixel[0], pixel[1]]
    ds.SliceThickness = 5.0
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [float(xy[0]), float(xy[1]), float(z)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_finding_lungs_like(root: Path, count: int = 6, size: int = 96) -> Path:
    """``2d_images/ID_<n>_Z_<z>.tif`` (int HU) + ``2d_masks/`` (0/1), like finding-lungs-ct."""
    (root / "2d_images").mkdir(parents=True)
    (root / "2d_masks").mkdir()
    for n in range(count):
        hu, labels = ct_slice(size, 0.9 + 0.02 * n, seed=n)
        name = f"ID_{n:04d}_Z_{100 + n:04d}.tif"
        write_tiff_hu(root / "2d_images" / name, hu)
        write_png(root / "2d_masks" / name.replace(".tif", ".png"), (labels > 0).astype(np.uint8))
    return root


def write_medseg_like(root: Path, count: int = 5, size: int = 80) -> Path:
    """``images/`` 8-bit crops + ``lung_masks/`` + ``infection_masks/`` + ``slices.csv``."""
    for sub in ("images", "lung_masks", "infection_masks"):
        (root / sub).mkdir(parents=True)
    lines = ["file,medseg_slice,infnet_split"]
    for n in range(count):
        hu, labels = ct_slice(size, 1.0, seed=10 + n)
        crop = (slice(8, size - 8), slice(4, size - 4))
        lung = (labels[crop] > 0).astype(np.uint8)
        infection = np.zeros_like(lung)
        infection[lung.shape[0] // 2 : lung.shape[0] // 2 + 4, 10:16] = 1
        infection &= lung
        name = f"medseg_{n:03d}.png"
        write_png(root / "images" / name, display_slice(hu[crop]))
        write_png(root / "lung_masks" / name, lung)
        write_png(root / "infection_masks" / name, infection)
        lines.append(f"{name},{n},{'test' if n == 0 else 'train'}")
    (root / "slices.csv").write_text("\n".join(lines) + "\n")
    return root


def write_covid_kaggle_like(root: Path, cases: int = 3, slices: int = 8) -> Path:
    """Kaggle "COVID-19 CT scans" layout: HU (coronacases) and 0..255 (radiopaedia) volumes."""
    for sub in ("ct_scans", "lung_mask", "infection_mask", "lung_and_infection_mask"):
        (root / sub).mkdir(parents=True)
    for n in range(cases):
        hu, labels = ct_volume(slices)
        infection = np.zeros_like(labels)
        infection[slices // 2, 20:26, 15:22] = 1
        infection &= (labels > 0).astype(np.uint8)
        if n % 2 == 0:
            image_name, mask_name = (
                f"coronacases_org_{n + 1:03d}.nii",
                f"coronacases_{n + 1:03d}.nii",
            )
            write_nifti(root / "ct_scans" / image_name, hu.astype(np.int16))
        else:
            image_name = f"radiopaedia_org_covid-19-pneumonia-{n}_8590{n}_1-dcm.nii"
            mask_name = f"radiopaedia_{n}_8590{n}_1.nii"
            write_nifti(root / "ct_scans" / image_name, display_slice(hu).astype(np.float32))
        write_nifti(root / "lung_mask" / mask_name, labels)
        write_nifti(root / "infection_mask" / mask_name, infection)
    return root


def build_tiny_dataset(root: Path, finding: int = 10, medseg: int = 6) -> Path:
    """A built dataset of finding-lungs-like and MedSeg-like slices (64 px), split
    0.6 / 0.2 / 0.2: what the training tests train and calibrate on."""
    from lungseg.dataset.build import BuildConfig, build_dataset

    sources = [
        str(write_finding_lungs_like(root / "finding", count=finding, size=64)),
        str(write_medseg_like(root / "medseg", count=medseg, size=64)),
    ]
    build_dataset(BuildConfig(sources=sources, fractions=(0.6, 0.2, 0.2)), root / "dataset")
    return root / "dataset"


def zip_files(
    target: Path,
    files: list[Path],
    *,
    folder: str = "",
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A deflated zip of ``files`` (under ``folder/`` inside it), and ``extra`` members
    (name: bytes), as a PACS export or a user's archive would hold them."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in files:
            bundle.write(file, f"{folder}/{file.name}" if folder else file.name)
        for name, data in (extra or {}).items():
            bundle.writestr(name, data)
    return target
