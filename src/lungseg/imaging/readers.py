"""Read CT as it comes: NIfTI, DICOM files and series, PNG/JPG/TIFF/BMP photos.

``read_image`` returns a ``CTImage`` (pixels, geometry, intensity kind);
``read_mask`` reads a label image through the same path so that image and mask
always end up in the same orientation. Every failure raises ``ImageReadError``
naming the file and the problem.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from lungseg.errors import ImageReadError
from lungseg.imaging.intensity import classify_values, hu_from_float
from lungseg.imaging.orientation import LPS_TO_RAS, to_display_order
from lungseg.imaging.types import CTImage, Geometry, Intensity

MAX_PIXELS = 2**26
"""Largest 2D image accepted (67 Mpx): larger ones are refused as decompression bombs."""
MAX_VOXELS = 2**30
"""Largest volume accepted (1 G voxels)."""

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


@dataclass
class _Raw:
    """Values as stored (already in display order), before intensity handling."""

    values: np.ndarray
    geometry: Geometry
    intensity: Intensity | None  # None: decide from the values
    notes: tuple[str, ...] = ()


def read_image(path: str | Path, *, intensity: Intensity | None = None) -> CTImage:
    """Read a CT slice or volume.

    Args:
        path: a NIfTI file (.nii, .nii.gz), a DICOM file, a folder holding one DICOM
            series, or a PNG/JPG/TIFF/BMP image.
        intensity: force what the values mean instead of deciding from the file
            (``Intensity.HU`` or ``Intensity.DISPLAY``).

    Returns:
        ``CTImage`` with an int16 HU or uint8 display array, ``(rows, cols)`` for a
        slice, ``(slices, rows, cols)`` for a volume.

    Raises:
        ImageReadError: the file is missing, empty, corrupt, truncated, of an
            unknown type, too large, 4D, or has no usable pixels.
    """
    path = Path(path)
    with _errors_named(path):
        raw = _load(path)
        notes = list(raw.notes)
        values = raw.values
        if intensity is Intensity.HU:
            array = hu_from_float(values.astype(np.float32))
            kind = Intensity.HU
            notes.append("HU forced by caller")
        elif intensity is Intensity.DISPLAY:
            array = np.clip(np.round(values), 0, 255).astype(np.uint8)
            kind = Intensity.DISPLAY
            notes.append("display forced by caller")
        elif raw.intensity is Intensity.HU:
            array, kind = hu_from_float(values.astype(np.float32)), Intensity.HU
        elif raw.intensity is Intensity.DISPLAY:
            array, kind = np.clip(values, 0, 255).astype(np.uint8), Intensity.DISPLAY
        else:
            array, kind, note = classify_values(values)
            notes.append(note)
        return CTImage(array, raw.geometry, kind, path, tuple(notes))


def read_mask(path: str | Path, *, like: CTImage | None = None) -> CTImage:
    """Read a label mask (integer values 0..255) in the same orientation rules as images.

    Args:
        path: any format ``read_image`` accepts.
        like: the image this mask belongs to; its shape must match.

    Raises:
        ImageReadError: as ``read_image``, or the values are not integer labels, or
            the shape differs from ``like``.
    """
    path = Path(path)
    with _errors_named(path):
        raw = _load(path, for_mask=True)
        values = raw.values
        if values.ndim == 3 and values.shape[-1] in (3, 4) and raw.geometry.spacing is None:
            raise ValueError("colour mask: give a single-channel label image")
        if values.dtype.kind == "f":
            rounded = np.round(values)
            if not np.allclose(values, rounded, atol=1e-3):
                raise ValueError("mask values are not integer labels")
            values = rounded
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(
                f"mask labels must lie in 0..255, found {values.min()}..{values.max()}"
            )
        mask = CTImage(values.astype(np.uint8), raw.geometry, Intensity.LABEL, path, raw.notes)
    if like is not None and mask.array.shape != like.array.shape:
        raise ImageReadError(
            path,
            f"mask shape {mask.array.shape} does not match image shape "
            f"{like.array.shape} of {like.source}",
        )
    return mask


@contextmanager
def _errors_named(path: Path) -> Iterator[None]:
    """Turn whatever a decoder raises into one ``ImageReadError`` naming the file."""
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "too large to read into memory") from None
    except Exception as error:  # decoders raise many types; the user needs one
        message = str(error) or type(error).__name__
        raise ImageReadError(path, message) from error


def _load(path: Path, *, for_mask: bool = False) -> _Raw:
    if not path.exists():
        raise ValueError("no such file or folder")
    if path.is_dir():
        return _load_dicom_series(path)
    if path.stat().st_size == 0:
        raise ValueError("file is empty")
    kind = _sniff(path)
    if kind == "nifti":
        return _load_nifti(path, for_mask=for_mask)
    if kind == "dicom":
        return _load_dicom_file(path)
    if kind == "raster":
        return _load_raster(path, for_mask=for_mask)
    raise ValueError("unknown file type: expected NIfTI, DICOM, PNG, JPEG, TIFF or BMP")


def _sniff(path: Path) -> str:
    """The file's kind from its first bytes, its suffix as a fallback."""
    with path.open("rb") as handle:
        head = handle.read(352)
    name = path.name.lower()
    if head.startswith(b"\x1f\x8b"):
        if name.endswith((".nii.gz", ".gz")):
            with gzip.open(path, "rb") as handle:
                inner = handle.read(352)
            if _is_nifti_header(inner):
                return "nifti"
        raise ValueError("gzip file that is not a .nii.gz NIfTI volume")
    if _is_nifti_header(head):
        return "nifti"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    magics = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF")
    if head.startswith(magics):
        return "raster"
    if name.endswith(".dcm"):
        return "dicom"  # DICOM without the 128-byte preamble
    if Path(name).suffix in RASTER_SUFFIXES or name.endswith((".nii", ".nii.gz")):
        raise ValueError(
            f"content is not a valid {Path(name).suffix} file (corrupt or mislabelled)"
        )
    return "unknown"


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


# --- NIfTI -----------------------------------------------------------------------


def _load_nifti(path: Path, *, for_mask: bool) -> _Raw:
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError("not a NIfTI image")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise ValueError(f"{len(img.shape)}D volume of shape {img.shape}: give one 3D volume")
    if int(np.prod(shape)) > MAX_VOXELS:
        raise ValueError(f"volume of {np.prod(shape)} voxels is larger than {MAX_VOXELS}")
    data = np.asanyarray(img.dataobj) if for_mask else img.get_fdata(dtype=np.float32)
    data = data.reshape(shape)
    flat = len(shape) == 2
    if flat:
        data = data[:, :, np.newaxis]
    array, geometry = to_display_order(data, img.affine)
    notes = ["NIfTI reoriented to LPS (radiological view)"]
    if _no_voxel_size(img.header):
        geometry = Geometry(None, geometry.affine, geometry.orientation)
        notes.append("the NIfTI header states no voxel size: sizes are in voxels, not mm or mL")
    if flat:
        array = array[0]
        geometry = Geometry(
            geometry.spacing[1:] if geometry.spacing else None,
            geometry.affine,
            geometry.orientation,
        )
    return _Raw(array, geometry, None, tuple(notes))


def _no_voxel_size(header: nib.Nifti1Header) -> bool:
    """No coordinate space stated (qform and sform codes 0) and voxel sizes of 0 or 1:
    nibabel's default, not a measurement."""
    codes = int(header["qform_code"]), int(header["sform_code"])
    zooms = np.asarray(header["pixdim"][1:4], dtype=float)
    return codes == (0, 0) and bool(np.all((zooms == 0) | (zooms == 1)))


# --- DICOM -----------------------------------------------------------------------


def _dicom_values(ds: pydicom.Dataset) -> tuple[np.ndarray, Intensity | None]:
    """Pixel values with RescaleSlope/Intercept applied, and what they are."""
    try:
        pixels = ds.pixel_array
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ValueError(f"cannot decode DICOM pixel data ({name}): {error}") from error
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        grey = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(grey), Intensity.DISPLAY
    values = pixels.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    if str(ds.get("Modality", "")).upper() == "CT" and "RescaleIntercept" in ds:
        return values, Intensity.HU
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        values = values.max() - values
    return values, None


def _dicom_affine(ds: pydicom.Dataset, slice_step: float, first_position: np.ndarray) -> np.ndarray:
    """RAS+ affine for voxel ``(col, row, slice)`` from DICOM's LPS geometry."""
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    col_dir, row_dir = orientation[:3], orientation[3:]
    normal = np.cross(col_dir, row_dir)
    affine = np.eye(4)
    affine[:3, 0] = col_dir * col_spacing  # moving along a row: next column
    affine[:3, 1] = row_dir * row_spacing
    affine[:3, 2] = normal * slice_step
    affine[:3, 3] = first_position
    return LPS_TO_RAS @ affine


def _has_geometry(ds: pydicom.Dataset) -> bool:
    return all(k in ds for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"))


def _load_dicom_file(path: Path) -> _Raw:
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        ds = pydicom.dcmread(str(path), force=True)
    if "PixelData" not in ds:
        raise ValueError("DICOM file holds no image (no PixelData)")
    values, kind = _dicom_values(ds)
    if values.ndim == 3:  # multi-frame: frames in stored order, geometry per frame not read
        spacing = None
        if "PixelSpacing" in ds:
            row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
            spacing = (
                float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 0)) or 0),
                row_spacing,
                col_spacing,
            )
        notes = ("multi-frame DICOM: frames kept in stored order",)
        return _Raw(values, Geometry(spacing=spacing), kind, notes)
    if not _has_geometry(ds):
        in_plane = tuple(float(v) for v in ds.PixelSpacing) if "PixelSpacing" in ds else None
        return _Raw(
            values,
            Geometry(spacing=in_plane),
            kind,
            ("DICOM without patient geometry: shown as stored",),
        )
    thickness = float(ds.get("SliceThickness", 1.0) or 1.0)
    affine = _dicom_affine(ds, thickness, np.array(ds.ImagePositionPatient, dtype=float))
    normal = np.abs(affine[:3, 2])
    if int(np.argmax(normal)) != 2:
        geometry = Geometry(
            spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
            affine=affine,
            orientation="as stored",
        )
        return _Raw(values, geometry, kind, ("non-axial DICOM slice: shown as stored",))
    array, geometry = to_display_order(values.T[:, :, np.newaxis], affine)
    geometry = Geometry(
        geometry.spacing[1:] if geometry.spacing else None, geometry.affine, geometry.orientation
    )
    return _Raw(array[0], geometry, kind, ("DICOM slice in radiological view",))


def _load_dicom_series(folder: Path) -> _Raw:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    datasets: list[pydicom.Dataset] = []
    for file in files:
        try:
            ds = pydicom.dcmread(str(file))
        except Exception:  # not DICOM (a README, DICOMDIR, thumbnails): skip
            continue
        if "PixelData" in ds and _has_geometry(ds):
            datasets.append(ds)
    if not datasets:
        raise ValueError("folder holds no DICOM images with patient geometry")
    series: dict[str, list[pydicom.Dataset]] = {}
    for member in datasets:
        series.setdefault(str(member.get("SeriesInstanceUID", "")), []).append(member)
    notes = []
    uid, chosen = max(series.items(), key=lambda item: len(item[1]))
    if len(series) > 1:
        notes.append(
            f"{len(series)} series in the folder: read the largest ({len(chosen)} slices, {uid})"
        )
    orientation = np.array(chosen[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    chosen.sort(
        key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))
    )
    positions = np.array(
        [np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)) for ds in chosen]
    )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in chosen}
    if len(shapes) > 1:
        raise ValueError(f"slices of different sizes in one series: {sorted(shapes)}")
    if len(chosen) > 1:
        steps = np.diff(positions)
        if np.any(steps <= 1e-3):
            raise ValueError("two slices share one position: duplicate files in the series?")
        step = float(np.median(steps))
        if np.ptp(steps) > 0.1 * step:
            notes.append(
                f"uneven slice spacing {steps.min():.2f}..{steps.max():.2f} mm: median used"
            )
    else:
        step = float(chosen[0].get("SliceThickness", 1.0) or 1.0)
    stack = []
    kinds = set()
    for member in chosen:
        values, kind = _dicom_values(member)
        stack.append(values)
        kinds.add(kind)
    volume = np.stack(stack, axis=0)  # (slice, row, col) in position order
    if volume.size > MAX_VOXELS:
        raise ValueError(f"series of {volume.size} voxels is larger than {MAX_VOXELS}")
    affine = _dicom_affine(chosen[0], step, np.array(chosen[0].ImagePositionPatient, dtype=float))
    array, geometry = to_display_order(np.transpose(volume, (2, 1, 0)), affine)
    kind = kinds.pop() if len(kinds) == 1 else None
    notes.append(f"DICOM series of {len(chosen)} slices in radiological view")
    return _Raw(array, geometry, kind, tuple(notes))


# --- PNG / JPEG / TIFF / BMP ----------------------------------------------------


def _load_raster(path: Path, *, for_mask: bool) -> _Raw:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                frames = getattr(img, "n_frames", 1)
                if width * height * frames > MAX_PIXELS:
                    raise ValueError(
                        f"image of {width}x{height} pixels x {frames} frames is larger than "
                        f"{MAX_PIXELS} pixels (decompression bomb?)"
                    )
                notes: list[str] = []
                planes = []
                for index in range(frames):
                    img.seek(index)
                    planes.append(_raster_plane(img, for_mask=for_mask, notes=notes))
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a readable image: {error}") from error
    except OSError as error:
        raise ValueError(f"corrupt or truncated image: {error}") from error
    values = planes[0] if len(planes) == 1 else np.stack(planes)
    kind = Intensity.DISPLAY if values.dtype == np.uint8 and not for_mask else None
    if values.ndim == 3 and len(planes) > 1:
        notes.append(f"{len(planes)}-page image read as a volume without geometry")
    return _Raw(values, Geometry(), kind, tuple(dict.fromkeys(notes)))


def _raster_plane(img: Image.Image, *, for_mask: bool, notes: list[str]) -> np.ndarray:
    """One frame as a 2D array: greyscale, EXIF rotation applied, integer or float values."""
    if img.getexif().get(0x0112, 1) != 1:
        img = ImageOps.exif_transpose(img)
        notes.append("EXIF orientation applied")
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.array(img).astype(np.uint16)
    if mode in ("I", "F"):
        return np.array(img)
    if mode == "P" and for_mask:
        return np.array(img)  # palette indices are the labels
    if mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr", "1", "L"):
        if mode in ("RGB", "RGBA"):
            rgb = np.array(img.convert("RGB"))
            if for_mask:
                if not (
                    np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 1], rgb[..., 2])
                ):
                    raise ValueError("colour mask: give a single-channel label image")
                return rgb[..., 0]
            if not (
                np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 1], rgb[..., 2])
            ):
                notes.append("colour image converted to grey (luminance)")
        return np.array(img.convert("L"))
    raise ValueError(f"unsupported image mode {mode}")
