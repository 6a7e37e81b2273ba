"""Read CT as it comes: NIfTI, DICOM files and series, PNG/JPG/TIFF/BMP photos.

``read_image`` returns a ``CTImage`` (pixels, geometry, intensity kind);
``read_mask`` reads a label image through the same path so that image and mask
always end up in the same orientation. Every failure raises ``ImageReadError``
naming the file and the problem.
"""

from __future__ import annotations

import gzip
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import io_orientation
from nibabel.spatialimages import HeaderDataError, HeaderTypeError, ImageDataError
from PIL import Image, ImageOps
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from lungseg.core.files import UnzipStopped, ZipTooLarge, unzip_flat
from lungseg.core.scratch import scratch_folder
from lungseg.errors import ImageReadError, TooLargeError
from lungseg.imaging.intensity import classify_values, display_from_values, hu_from_float
from lungseg.imaging.orientation import LPS_TO_RAS, to_display_order
from lungseg.imaging.types import CTImage, Geometry, Intensity


@dataclass(frozen=True)
class ReadLimits:
    """How much one input may hold. Every limit is checked against what the file's
    header or container declares, before pixels of that size are allocated or
    decompressed; an input over a limit raises ``TooLargeError`` naming it.

    The defaults take any real chest CT (a 512 x 512 scan of up to 1024 slices:
    about 2.1 GB peak memory through the whole pipeline, ``benchmarks/hostile.py``).

    Attributes:
        max_pixels: pixels of one slice or picture (rows x columns x samples).
        max_slices: slices of a volume, frames of a DICOM or pages of a TIFF.
        max_voxels: voxels of a whole volume.
        max_inflated_mb: a compressed container (deflated DICOM) once inflated.
        max_files: files looked at in a DICOM folder or zip.
        max_unzipped_gb: a zip of a DICOM series, unpacked (declared sizes): what a scan
            can be, a 512 x 512 x 1024 series in 16 bits (0.5 GB) with room for a second
            series beside it (it was 4 GB: a 4 MB zip of zeros wrote 4 GB to disk).
    """

    max_pixels: int = 2**26
    max_slices: int = 1024
    max_voxels: int = 512 * 512 * 1024
    max_inflated_mb: float = 1024.0
    max_files: int = 8192
    max_unzipped_gb: float = 1.5

    def check_slice(self, rows: int, cols: int, samples: int = 1) -> None:
        if rows * cols * samples > self.max_pixels:
            raise _TooLarge(
                f"a slice of {rows} x {cols}"
                + (f" x {samples} samples" if samples > 1 else "")
                + f" pixels is more than the limit of {self.max_pixels} pixels per slice",
                "max_pixels",
            )

    def check_volume(self, slices: int, rows: int, cols: int) -> None:
        self.check_slice(rows, cols)
        if slices > self.max_slices:
            raise _TooLarge(
                f"{slices} slices are more than the limit of {self.max_slices}", "max_slices"
            )
        if slices * rows * cols > self.max_voxels:
            raise _TooLarge(
                f"{slices} x {rows} x {cols} voxels are more than the limit of "
                f"{self.max_voxels} voxels",
                "max_voxels",
            )


DEFAULT_LIMITS = ReadLimits()


class _TooLarge(ValueError):
    """Raised inside the readers; ``read_image`` turns it into ``TooLargeError``."""

    def __init__(self, problem: str, limit: str) -> None:
        super().__init__(problem)
        self.limit = limit


DECODER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    struct.error,
    zlib.error,
    InvalidDicomError,
    BytesLengthException,
    ImageFileError,
    HeaderDataError,
    HeaderTypeError,
    ImageDataError,
    NotImplementedError,
    RuntimeError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    SyntaxError,  # Pillow: "broken PNG file"
)
"""What pydicom, nibabel and Pillow raise on corrupt or odd bytes. Caught only around
their calls (``_decoding``); an error of lungseg's own code is a bug and propagates."""


RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


@dataclass
class _Raw:
    """Values as stored (already in display order), before intensity handling."""

    values: np.ndarray
    geometry: Geometry
    intensity: Intensity | None  # None: decide from the values
    notes: tuple[str, ...] = ()
    not_ct: str | None = None  # what the file says it is, where that is not CT


def read_image(
    path: str | Path,
    *,
    intensity: Intensity | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    stop: Callable[[], bool] | None = None,
) -> CTImage:
    """Read a CT slice or volume.

    Args:
        path: a NIfTI file (.nii, .nii.gz), a DICOM file, a folder holding one DICOM
            series, or a PNG/JPG/TIFF/BMP image.
        intensity: force what the values mean instead of deciding from the file
            (``Intensity.HU`` or ``Intensity.DISPLAY``).
        limits: the largest input accepted (``ReadLimits``).
        stop: asked between the files of a series or a zip; once it says yes, reading
            stops (``ReadStopped``) and what was unpacked is removed (the server passes
            "has the client hung up?").

    Returns:
        ``CTImage`` with an int16 HU or uint8 display array, ``(rows, cols)`` for a
        slice, ``(slices, rows, cols)`` for a volume.

    Raises:
        ImageReadError: the file is missing, empty, corrupt, truncated, of an
            unknown type, 4D, or has no usable pixels.
        TooLargeError: the file declares more than ``limits`` allow.
    """
    path = Path(path)
    asked = _STOP.set(stop)
    try:
        with _errors_named(path):
            return _finish(_load(path, limits=limits), path, intensity)
    finally:
        _STOP.reset(asked)


class ReadStopped(Exception):
    """Reading stopped because ``read_image``'s ``stop`` said so."""


_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("lungseg_read_stop", default=None)
"""The ``stop`` of the ``read_image`` call under way (in this thread)."""


def _stopping() -> bool:
    stop = _STOP.get()
    return stop is not None and stop()


def _check_stop() -> None:
    if _stopping():
        raise ReadStopped("reading stopped: the caller no longer wants the answer")


def image_from_array(
    array: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    intensity: Intensity | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    name: str = "array",
) -> CTImage:
    """A CT slice ``(rows, cols)`` or volume ``(slices, rows, cols)`` given as an array,
    taken as shown (no orientation is known), with its pixel ``spacing`` in mm if given.
    Values are classified as files' are (``intensity`` overrides).

    Raises:
        ImageReadError: not 2D or 3D, not numeric, or over ``limits``.
    """
    path = Path(f"<{name}>")
    with _errors_named(path):
        values = np.asarray(array)
        if values.ndim not in (2, 3) or values.dtype.kind not in "iufb" or not values.size:
            raise ValueError(
                f"expected a 2D or 3D numeric array, got {values.dtype} {values.shape}"
            )
        if spacing is not None and len(spacing) != values.ndim:
            raise ValueError(f"spacing {spacing} does not match a {values.ndim}D array")
        if values.ndim == 2:
            limits.check_slice(*values.shape)
        else:
            _check_volume_axes(values.shape, spacing)
            limits.check_volume(*values.shape)
        geometry = Geometry(spacing=tuple(float(v) for v in spacing) if spacing else None)
        raw = _Raw(
            values.astype(np.float32) if values.dtype.kind == "b" else values, geometry, None
        )
        return _finish(raw, path, intensity)


def _check_volume_axes(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> None:
    """Refuse a 3D array whose shape or spacing says it is not ``(slices, rows, cols)``:
    a picture's colour channels, or a volume in nibabel's ``(x, y, z)`` order (a slice's
    rows and columns are the two axes of equal length and equal spacing)."""
    fix = (
        "give a volume as (slices, rows, columns) with spacing (slice, row, column) in mm: "
        "np.transpose(data, (2, 1, 0)) for nibabel's (x, y, z) data, or pass the nibabel "
        "image itself"
    )
    if shape[-1] in (3, 4) and min(shape[:2]) > 16:
        raise ValueError(
            f"a {shape[0]} x {shape[1]} x {shape[2]} array looks like a colour picture, not a "
            "volume: convert it to grey (one value per pixel) first"
        )
    if shape[0] == shape[1] != shape[2]:
        raise ValueError(
            f"a {shape[0]} x {shape[1]} x {shape[2]} array looks like (x, y, z) order (its "
            f"first two axes are equal, as a slice's rows and columns are): {fix}"
        )
    if (
        spacing is not None
        and np.isclose(spacing[0], spacing[1])
        and not np.isclose(spacing[1], spacing[2])
    ):
        raise ValueError(
            f"spacing {tuple(spacing)} looks like (x, y, z) order (a slice's rows and columns "
            f"come last and usually share one pixel size): {fix}"
        )


def image_from_nifti(img: nib.Nifti1Image, *, limits: ReadLimits = DEFAULT_LIMITS) -> CTImage:
    """A nibabel NIfTI image already in memory, read as a NIfTI file is."""
    path = Path(str(img.get_filename() or "<nibabel image>"))
    with _errors_named(path):
        return _finish(_nifti_raw(img, limits, for_mask=False), path, None)


def _finish(raw: _Raw, path: Path, intensity: Intensity | None) -> CTImage:
    """What the values mean (stated, forced or classified), as int16 HU or uint8 display."""
    notes = list(raw.notes)
    values = raw.values
    if intensity is Intensity.HU:
        array, kind = hu_from_float(values), Intensity.HU
        notes.append("HU forced by caller")
    elif intensity is Intensity.DISPLAY:
        array, kind = display_from_values(values), Intensity.DISPLAY
        notes.append("display forced by caller")
    elif raw.intensity is Intensity.HU:
        array, kind = hu_from_float(values), Intensity.HU
    elif raw.intensity is Intensity.DISPLAY:
        array, kind = display_from_values(values), Intensity.DISPLAY
    else:
        array, kind, note = classify_values(values)
        notes.append(note)
    return CTImage(array, raw.geometry, kind, path, tuple(notes), raw.not_ct)


def read_mask(
    path: str | Path, *, like: CTImage | None = None, limits: ReadLimits = DEFAULT_LIMITS
) -> CTImage:
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
        raw = _load(path, for_mask=True, limits=limits)
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
    """Name the file in the reading errors (``ValueError``, ``OSError`` and the decoders'
    errors caught by ``_decoding``); anything else is a bug and propagates."""
    try:
        yield
    except ImageReadError:
        raise
    except _TooLarge as error:
        raise TooLargeError(path, str(error), error.limit) from None
    except MemoryError:
        raise ImageReadError(path, "too large to read into memory") from None
    except (ValueError, OSError, EOFError) as error:
        message = str(error) or type(error).__name__
        raise ImageReadError(path, message) from error


@contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Around one call into pydicom, nibabel or Pillow: their errors on bad bytes become
    a ``ValueError`` saying ``what`` could not be decoded."""
    try:
        yield
    except _TooLarge:
        raise
    except Image.DecompressionBombError as error:  # Pillow's limit, met before ours
        raise _TooLarge(f"the picture declares too many pixels ({error})", "max_pixels") from error
    except DECODER_ERRORS as error:
        message = str(error) or type(error).__name__
        raise ValueError(f"{what}: {message}") from error


def _load(path: Path, *, limits: ReadLimits, for_mask: bool = False) -> _Raw:
    if not path.exists():
        raise ValueError("no such file or folder")
    if path.is_dir():
        return _load_dicom_series(path, limits)
    if path.stat().st_size == 0:
        raise ValueError("file is empty")
    kind = _sniff(path)
    if kind == "zip":
        return _load_zip(path, limits)
    if kind == "nifti":
        return _load_nifti(path, limits, for_mask=for_mask)
    if kind == "dicom":
        return _load_dicom_file(path, limits)
    if kind == "raster":
        return _load_raster(path, limits, for_mask=for_mask)
    raise ValueError("unknown file type: expected NIfTI, DICOM, PNG, JPEG, TIFF or BMP")


def _sniff(path: Path) -> str:
    """The file's kind from its first bytes, its suffix as a fallback."""
    with path.open("rb") as handle:
        head = handle.read(352)
    name = path.name.lower()
    if head.startswith(b"\x1f\x8b"):
        if name.endswith((".nii.gz", ".gz")):
            with _decoding("corrupt gzip file"), gzip.open(path, "rb") as handle:
                inner = handle.read(352)
            if _is_nifti_header(inner):
                return "nifti"
        raise ValueError("gzip file that is not a .nii.gz NIfTI volume")
    if _is_nifti_header(head):
        return "nifti"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04") or name.endswith(".zip"):
        return "zip"
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


def _load_nifti(path: Path, limits: ReadLimits, *, for_mask: bool) -> _Raw:
    with _decoding("not a readable NIfTI header"):
        img: Any = nib.load(str(path))
        offset = int(getattr(img.dataobj, "offset", 0))  # nibabel's ArrayProxy
    shape = _checked_nifti_shape(img, limits)
    declared = int(np.prod(shape)) * img.header.get_data_dtype().itemsize
    if not path.name.lower().endswith(".gz") and path.stat().st_size < offset + declared:
        raise ValueError(
            f"truncated: the header declares {offset + declared} bytes, the file holds "
            f"{path.stat().st_size}"
        )
    return _nifti_raw(img, limits, for_mask=for_mask)


def _checked_nifti_shape(img: Any, limits: ReadLimits) -> tuple[int, ...]:
    """The declared 2D or 3D shape (a trailing 4th axis of 1 dropped), within ``limits``."""
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError("not a NIfTI image")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise ValueError(f"{len(img.shape)}D volume of shape {img.shape}: give one 3D volume")
    if min(shape) < 1:
        raise ValueError(f"the header declares an empty volume of shape {shape}")
    _check_nifti_size(shape, img.affine, limits)
    return shape


def _nifti_raw(img: nib.Nifti1Image, limits: ReadLimits, *, for_mask: bool) -> _Raw:
    """A NIfTI image's voxels in the radiological view, its header kept for writing masks."""
    shape = _checked_nifti_shape(img, limits)
    affine = img.affine
    with _decoding("cannot read the NIfTI voxels (corrupt or truncated)"):
        data = _nifti_values(img, for_mask=for_mask).reshape(shape)
    flat = len(shape) == 2
    if flat:
        data = data[:, :, np.newaxis]
    array, geometry = to_display_order(data, affine)
    if not flat:  # masks are written back on this grid
        geometry = replace(geometry, nifti_header=img.header.copy())
    notes = ["NIfTI reoriented to LPS (radiological view)"]
    if _no_voxel_size(img.header):
        geometry = replace(geometry, spacing=None)
        notes.append("the NIfTI header states no voxel size: sizes are in voxels, not mm or mL")
    if flat:
        array = array[0]
        geometry = Geometry(
            geometry.spacing[1:] if geometry.spacing else None,
            geometry.affine,
            geometry.orientation,
        )
    return _Raw(array, geometry, None, tuple(notes))


def _check_nifti_size(shape: tuple[int, ...], affine: np.ndarray, limits: ReadLimits) -> None:
    """The declared shape against ``limits``, slices counted along the axis that becomes
    the slice axis of the radiological view."""
    if len(shape) == 2:
        limits.check_slice(*shape)
        return
    axes = io_orientation(affine)[:, 0]
    head_foot = [axis for axis in range(3) if axes[axis] == 2]
    slice_axis = head_foot[0] if head_foot else 2
    rows, cols = (shape[axis] for axis in range(3) if axis != slice_axis)
    limits.check_volume(shape[slice_axis], rows, cols)


def _nifti_values(img: nib.Nifti1Image, *, for_mask: bool) -> np.ndarray:
    """The voxels as stored where that is exact (integers without scaling: no float
    copy of a whole scan), else float32 with the header's scaling applied."""
    if for_mask or isinstance(img.dataobj, np.ndarray):  # a mask, or an image in memory
        return np.asanyarray(img.dataobj)
    proxy: Any = img.dataobj  # nibabel's ArrayProxy
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if img.header.get_data_dtype().kind in "iu" and slope == 1.0 and inter == 0.0:
        return np.asarray(proxy.get_unscaled())
    return img.get_fdata(dtype=np.float32)


def _no_voxel_size(header: nib.Nifti1Header) -> bool:
    """No coordinate space stated (qform and sform codes 0) and voxel sizes of 0 or 1:
    nibabel's default, not a measurement."""
    codes = int(header["qform_code"]), int(header["sform_code"])
    zooms = np.asarray(header["pixdim"][1:4], dtype=float)
    return codes == (0, 0) and bool(np.all((zooms == 0) | (zooms == 1)))


# --- DICOM -----------------------------------------------------------------------


def _read_dicom(path: Path, limits: ReadLimits, *, pixels: bool = True) -> pydicom.Dataset:
    """One DICOM file (its pixel data left undecoded); a deflated file is first inflated
    in a stream, only to check its size against the limit."""
    _check_inflated_size(path, limits)
    with _decoding("not a readable DICOM file"):
        try:
            return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
        except InvalidDicomError:
            return pydicom.dcmread(str(path), force=True, stop_before_pixels=not pixels)


def _check_inflated_size(path: Path, limits: ReadLimits) -> None:
    """A deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99) inflates whole in
    pydicom: count its inflated bytes in a stream first, stopping at the limit."""
    with path.open("rb") as handle:
        head = handle.read(144)
        if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
            return  # no standard file meta group: not deflated
        (group_length,) = struct.unpack("<I", head[140:144])
        meta = handle.read(min(group_length, 1 << 16))
        if DeflatedExplicitVRLittleEndian.encode("ascii") not in meta:
            return
        handle.seek(144 + group_length)
        limit = int(limits.max_inflated_mb * 1024 * 1024)
        inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not inflater.eof and (chunk := handle.read(1 << 16)):
            while chunk and not inflater.eof:  # past the stream's end, zlib keeps a tail
                with _decoding("corrupt deflated DICOM"):
                    inflated += len(inflater.decompress(chunk, 1 << 20))
                chunk = inflater.unconsumed_tail
                if inflated > limit:
                    raise _TooLarge(
                        f"the deflated DICOM inflates to more than the limit of "
                        f"{limits.max_inflated_mb:g} MB",
                        "max_inflated_mb",
                    )


def _check_dicom_pixels(ds: pydicom.Dataset, limits: ReadLimits) -> tuple[int, int]:
    """The declared rows, columns, frames and samples against ``limits``, before decoding."""
    with _decoding("unreadable DICOM image header"):
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows < 1 or cols < 1 or frames < 1 or samples < 1:
        raise ValueError(f"DICOM declares {rows} x {cols} pixels x {frames} frames: no image")
    limits.check_slice(rows, cols, samples)
    if frames > 1:
        limits.check_volume(frames, rows, cols)
    return rows, cols


def _dicom_kind(ds: pydicom.Dataset) -> Intensity | None:
    """What the pixel values mean, from the header alone."""
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        return Intensity.DISPLAY
    if str(ds.get("Modality", "")).upper() == "CT" and "RescaleIntercept" in ds:
        return Intensity.HU
    return None


def _dicom_values(ds: pydicom.Dataset) -> tuple[np.ndarray, Intensity | None]:
    """Pixel values with RescaleSlope/Intercept applied, and what they are."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    with _decoding(f"cannot decode DICOM pixel data ({getattr(syntax, 'name', syntax)})"):
        pixels = ds.pixel_array
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        kind = _dicom_kind(ds)
        colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
        inverted = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if colour:
        grey = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(grey), kind
    whole = pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2
    if kind is Intensity.HU and whole and _small_integers(slope, intercept):
        # CT's usual integer rescale: integer HU, the very values float32 gives, at a
        # fraction of the cost (and ``hu_from_float`` takes them without a float copy)
        return pixels.astype(np.int32) * int(slope) + int(intercept), kind
    values = pixels.astype(np.float32) * slope + intercept
    if kind is None and inverted:
        values = values.max() - values
    return values, kind


def _small_integers(slope: float, intercept: float) -> bool:
    """Whether a rescale maps 16-bit pixels to integers float32 holds exactly (below 2**24)."""
    return (
        slope.is_integer()
        and intercept.is_integer()
        and abs(slope) * 65535 + abs(intercept) < 2**24
    )


def _dicom_affine(
    ds: pydicom.Dataset,
    slice_step: float,
    first_position: np.ndarray,
    slice_vector: np.ndarray | None = None,
) -> np.ndarray:
    """RAS+ affine for voxel ``(col, row, slice)`` from DICOM's LPS geometry.

    ``first_position``: the ImagePositionPatient of slice 0; ``slice_vector``: the LPS
    step from one slice to the next (a tilted gantry's slices do not follow the plane's
    normal), else the normal times ``slice_step``."""
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    col_dir, row_dir = orientation[:3], orientation[3:]
    normal = np.cross(col_dir, row_dir)
    affine = np.eye(4)
    affine[:3, 0] = col_dir * col_spacing  # moving along a row: next column
    affine[:3, 1] = row_dir * row_spacing
    affine[:3, 2] = normal * slice_step if slice_vector is None else slice_vector
    affine[:3, 3] = first_position
    return LPS_TO_RAS @ affine


def _has_geometry(ds: pydicom.Dataset) -> bool:
    return all(k in ds for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"))


def _load_dicom_file(path: Path, limits: ReadLimits) -> _Raw:
    ds = _read_dicom(path, limits)
    if "PixelData" not in ds:
        raise ValueError("DICOM file holds no image (no PixelData)")
    _check_dicom_pixels(ds, limits)
    values, kind = _dicom_values(ds)
    with _decoding("unreadable DICOM geometry"):
        return replace(_dicom_file_raw(ds, values, kind), not_ct=_not_ct_modality(ds))


NOT_CT_MODALITIES = {
    "CR": "a computed radiograph",
    "DX": "a digital radiograph",
    "MG": "a mammogram",
    "RF": "a fluoroscopy image",
    "XA": "an X-ray angiogram",
    "US": "an ultrasound image",
    "MR": "an MR image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "OP": "an eye photograph",
    "XC": "a photograph",
    "ES": "an endoscopy image",
}
"""DICOM modalities that are not CT, and what they are in words."""


def _not_ct_modality(ds: pydicom.Dataset) -> str | None:
    modality = str(ds.get("Modality", "")).upper()
    if modality in NOT_CT_MODALITIES:
        return f"{NOT_CT_MODALITIES[modality]} (DICOM Modality {modality}), not CT"
    return None


def _dicom_file_raw(ds: pydicom.Dataset, values: np.ndarray, kind: Intensity | None) -> _Raw:
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


def _series_headers(folder: Path, limits: ReadLimits) -> list[tuple[Path, pydicom.Dataset]]:
    """Headers (no pixel data) of the folder's DICOM images with patient geometry."""
    files = []
    for file in folder.rglob("*"):
        if file.is_file():
            files.append(file)
            if len(files) > limits.max_files:
                raise _TooLarge(
                    f"the folder holds more than the limit of {limits.max_files} files",
                    "max_files",
                )
    headers = []
    for file in sorted(files):
        _check_stop()
        try:
            ds = _read_dicom(file, limits, pixels=False)
        except _TooLarge:
            raise
        except ValueError:  # not DICOM (a README, DICOMDIR, thumbnails): skip
            continue
        with _decoding(f"{file.name}: unreadable DICOM header"):
            if "Rows" in ds and _has_geometry(ds):
                headers.append((file, ds))
    return headers


def _load_dicom_series(folder: Path, limits: ReadLimits) -> _Raw:
    headers = _series_headers(folder, limits)
    if not headers:
        raise ValueError("folder holds no DICOM images with patient geometry")
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for member in headers:
        series.setdefault(str(member[1].get("SeriesInstanceUID", "")), []).append(member)
    notes = []
    uid, chosen = max(series.items(), key=lambda item: len(item[1]))
    if len(series) > 1:
        notes.append(
            f"{len(series)} series in the folder: read the largest ({len(chosen)} slices, {uid})"
        )
    with _decoding("unreadable DICOM geometry"):
        first = chosen[0][1]
        orientation = np.array(first.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        positions = {
            id(ds): float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))
            for _, ds in chosen
        }
        shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in chosen}
    chosen.sort(key=lambda member: positions[id(member[1])])
    if len(shapes) > 1:
        raise ValueError(f"slices of different sizes in one series: {sorted(shapes)}")
    rows, cols = shapes.pop()
    limits.check_volume(len(chosen), rows, cols)  # before any pixel is decoded
    ordered = np.array([positions[id(ds)] for _, ds in chosen])
    if len(chosen) > 1:
        steps = np.diff(ordered)
        if np.any(steps <= 1e-3):
            raise ValueError("two slices share one position: duplicate files in the series?")
        step = float(np.median(steps))
        if np.ptp(steps) > 0.1 * step:
            notes.append(
                f"uneven slice spacing {steps.min():.2f}..{steps.max():.2f} mm: median used"
            )
    else:
        step = float(first.get("SliceThickness", 1.0) or 1.0)
    with _decoding("unreadable DICOM header"):
        kinds = {_dicom_kind(ds) for _, ds in chosen}
    kind = kinds.pop() if len(kinds) == 1 else None
    # HU slices go straight to int16: the scan never exists as float32 as a whole
    volume = np.empty((len(chosen), rows, cols), np.int16 if kind is Intensity.HU else np.float32)
    for index, (file, _) in enumerate(chosen):
        _check_stop()
        ds = _read_dicom(file, limits)
        values, _ = _dicom_values(ds)
        if values.shape != (rows, cols):
            raise ValueError(
                f"{file.name}: pixel data of shape {values.shape}, not {rows} x {cols}"
            )
        volume[index] = hu_from_float(values) if kind is Intensity.HU else values
    with _decoding("unreadable DICOM geometry"):
        # the grid starts at the lowest slice along the normal, whatever order the files
        # were listed in; its third axis is the mean step between neighbouring slices
        start = np.array(chosen[0][1].ImagePositionPatient, dtype=float)
        end = np.array(chosen[-1][1].ImagePositionPatient, dtype=float)
        vector = (end - start) / (len(chosen) - 1) if len(chosen) > 1 else None
        affine = _dicom_affine(chosen[0][1], step, start, vector)
    array, geometry = to_display_order(np.transpose(volume, (2, 1, 0)), affine)
    if vector is not None and geometry.spacing is not None:
        tilt = float(np.degrees(np.arccos(min(1.0, step / float(np.linalg.norm(vector))))))
        if tilt > 0.5:  # a tilted gantry: a voxel's height is the planes' distance
            notes.append(f"tilted gantry ({tilt:.1f} degrees): slices kept as scanned")
            if np.isclose(geometry.spacing[0], np.linalg.norm(vector)):
                geometry = replace(geometry, spacing=(step, *geometry.spacing[1:]))
    datasets = tuple(ds for _, ds in chosen)
    geometry = replace(
        geometry,
        dicom_headers=datasets,
        stored_affine=affine,
        instance_numbers=_instance_numbers(datasets, affine),
    )
    notes.append(f"DICOM series of {len(chosen)} slices in radiological view")
    return _Raw(array, geometry, kind, tuple(notes), _not_ct_modality(chosen[0][1]))


def _instance_numbers(
    headers: tuple[pydicom.Dataset, ...], affine: np.ndarray
) -> tuple[int | None, ...]:
    """Each display slice's InstanceNumber (``()`` where the series' slices are not
    the display's slices, as for a sagittal series)."""
    stored = np.arange(len(headers)).reshape(1, 1, -1)
    order, _ = to_display_order(stored, affine)
    if order.shape != (len(headers), 1, 1):
        return ()
    numbers = []
    for index in order[:, 0, 0]:
        value = headers[int(index)].get("InstanceNumber")
        try:
            numbers.append(int(value) if value not in (None, "") else None)
        except (TypeError, ValueError):
            numbers.append(None)
    return tuple(numbers)


def _looks_like_dicom(head: bytes) -> bool:
    """A zip member worth unpacking for a series: a DICOM file ("DICM" after its
    preamble), or a bare dataset without one (it starts with a group 0002 or 0008 tag,
    little-endian). Anything else (zeros, a PDF, a report, a thumbnail) is skipped unread:
    pydicom would otherwise be forced to parse it."""
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


def _load_zip(archive: Path, limits: ReadLimits) -> _Raw:
    """A zip of one DICOM series: unpacked flat into a private temporary folder (member
    names are never used as paths; each member is read up to its declared size only),
    read as a series, then removed."""
    with scratch_folder("zip") as folder:  # removed on SIGTERM too; swept if killed
        try:
            unzip_flat(
                archive,
                folder,
                lambda index, _member: f"{index:05d}.dcm",
                max_files=limits.max_files,
                max_bytes=limits.max_unzipped_gb * 1024**3,
                wanted=_looks_like_dicom,
                stop=_stopping,
            )
        except ZipTooLarge as error:
            raise _TooLarge(str(error), error.limit) from error
        except UnzipStopped as error:
            raise ReadStopped(str(error)) from None
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
            RuntimeError,
        ) as error:
            # corrupt, truncated, an unsupported compression method, or encrypted
            raise ValueError(f"not a readable zip: {error}") from error
        return _load_dicom_series(folder, limits)


# --- PNG / JPEG / TIFF / BMP ----------------------------------------------------


def _load_raster(path: Path, limits: ReadLimits, *, for_mask: bool) -> _Raw:
    frames_read: list[Image.Image] = []
    with (
        _decoding("not a readable image (corrupt, truncated or mislabelled)"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limits rule
        with Image.open(path) as img:
            width, height = img.size
            frames = int(getattr(img, "n_frames", 1))
            limits.check_slice(height, width, len(img.getbands()))
            if frames > 1:
                limits.check_volume(frames, height, width)
            for index in range(frames):
                img.seek(index)
                img.load()
                frames_read.append(img.copy())
    notes: list[str] = []
    planes = [_raster_plane(frame, for_mask=for_mask, notes=notes) for frame in frames_read]
    values = planes[0] if len(planes) == 1 else np.stack(planes)
    kind = Intensity.DISPLAY if values.dtype == np.uint8 and not for_mask else None
    if values.ndim == 3 and len(planes) > 1:
        notes.append(f"{len(planes)}-page image read as a volume without geometry")
    colour = 0.0 if for_mask else colour_share(frames_read[0])
    not_ct = (
        f"a colour photograph ({colour:.0%} of its pixels in colour), not a CT slice"
        if colour > PHOTO_COLOUR_SHARE
        else None
    )
    return _Raw(values, Geometry(), kind, tuple(dict.fromkeys(notes)), not_ct)


PHOTO_COLOUR_SHARE = 0.2
"""A picture with more than this share of its pixels in colour is a photograph, not CT:
CT is grey, and burned-in arrows, text and overlays cover far less of an export."""
COLOURED = 40
"""A pixel is in colour where its red, green and blue differ by more than this (0..255)."""


def colour_share(img: Image.Image) -> float:
    """The share of a picture's pixels in colour (0 for a grey one)."""
    if img.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return 0.0
    rgb = np.asarray(img.convert("RGB"))
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))  # some 250 000 px
    sample = rgb[::step, ::step].astype(np.int16)
    spread = sample.max(axis=-1) - sample.min(axis=-1)
    return float((spread > COLOURED).mean())


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
