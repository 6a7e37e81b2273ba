"""Size limits are checked against what a file declares, before anything that size is
allocated: tiny hostile files are refused fast and in little memory."""

from __future__ import annotations

import io
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless
from synthetic import ct_volume, write_dicom_series, write_dicom_slice

from lungseg.errors import ImageReadError, TooLargeError
from lungseg.imaging import read_image
from lungseg.imaging.readers import DEFAULT_LIMITS, ReadLimits

SMALL = ReadLimits(
    max_pixels=128 * 128, max_slices=6, max_voxels=128 * 128 * 6, max_inflated_mb=1.0
)


def _peak_mb(action: Callable[[], object]) -> float:
    """Peak memory Python allocated (numpy arrays included) while ``action`` read and refused."""
    tracemalloc.start()
    try:
        action()
    except ImageReadError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def _refused(path: Path, limit: str, limits: ReadLimits = DEFAULT_LIMITS) -> TooLargeError:
    with pytest.raises(TooLargeError) as caught:
        read_image(path, limits=limits)
    assert caught.value.limit == limit
    assert str(path) in str(caught.value)
    return caught.value


def test_a_nifti_header_declaring_a_huge_volume_is_refused_before_reading(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 1000))
    header.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)  # 420 bytes on disk
    error = _refused(path, "max_voxels")
    assert "1000 x 4096 x 4096 voxels" in str(error)
    assert _peak_mb(lambda: read_image(path)) < 5


def test_a_truncated_nifti_is_refused_before_its_array_is_allocated(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 400))  # within the limits: 200 MB declared
    header.set_data_dtype(np.int16)
    path = tmp_path / "cut.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1000)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)
    assert _peak_mb(lambda: read_image(path)) < 5


def test_a_gzip_nifti_declaring_more_slices_than_allowed(tmp_path: Path) -> None:
    hu, _ = ct_volume(slices=8, size=32, lung_free=0)
    path = tmp_path / "long.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), np.diag([-1, -1, 1, 1.0])), path)
    _refused(path, "max_slices", ReadLimits(max_slices=7))
    assert read_image(path, limits=ReadLimits(max_slices=8)).array.shape == (8, 32, 32)


def test_a_dicom_declaring_huge_rows_and_columns_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    path = write_dicom_slice(tmp_path / "a.dcm", np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 40000  # 1.6 G pixels declared, 128 bytes of pixel data
    ds.save_as(path)
    _refused(path, "max_pixels")
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = 5_000_000
    ds.save_as(path)
    _refused(path, "max_slices")


def test_a_deflated_dicom_is_inflated_only_up_to_the_limit(tmp_path: Path) -> None:
    hu = np.zeros((1024, 1024), np.int16)  # 2 MB of pixels, deflates to a few KB
    path = write_dicom_slice(tmp_path / "plain.dcm", hu)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    assert deflated.stat().st_size < 50_000
    _refused(deflated, "max_inflated_mb", ReadLimits(max_inflated_mb=1.0))
    assert read_image(deflated).array.shape == (1024, 1024)  # within the default limit


def test_a_compressed_dicom_is_checked_before_its_pixels_are_decoded(tmp_path: Path) -> None:
    path = write_dicom_slice(tmp_path / "a.dcm", np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([struct.pack("<16I", *([0] * 16))])  # bogus RLE: never decoded
    ds.Rows = ds.Columns = 30000
    ds.save_as(path)
    _refused(path, "max_pixels")


def test_a_dicom_series_over_the_limits_is_refused_before_any_pixel_is_decoded(
    tmp_path: Path,
) -> None:
    hu, _ = ct_volume(slices=8, size=64, lung_free=0)
    folder = tmp_path / "series"
    write_dicom_series(folder, hu)
    _refused(folder, "max_slices", SMALL)
    _refused(folder, "max_files", ReadLimits(max_files=5))
    assert read_image(folder).array.shape == (8, 64, 64)


def test_many_tiny_pages_are_refused_by_their_count(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((2, 2), i % 256, np.uint8)) for i in range(20)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    path = tmp_path / "pages.tif"
    path.write_bytes(buffer.getvalue())
    _refused(path, "max_slices", SMALL)


def test_the_limits_are_settings(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(path)
    _refused(path, "max_pixels", ReadLimits(max_pixels=100 * 199))
    assert read_image(path, limits=ReadLimits(max_pixels=100 * 200)).array.shape == (100, 200)


def test_bytes_after_the_deflate_stream_do_not_hang_the_reader(tmp_path: Path) -> None:
    """zlib keeps input past the stream's end as an unconsumed tail when the stream ends
    on a 1 MB output boundary; counting it forever hung a server thread (found as a
    flaky test: pydicom's random UIDs put some files on that boundary)."""
    path = write_dicom_slice(tmp_path / "plain.dcm", np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    raw = deflated.read_bytes()
    (group_length,) = struct.unpack("<I", raw[140:144])
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = packer.compress(b"\0" * (2 << 20)) + packer.flush() + b"\0\0"  # ends on 2 MB
    deflated.write_bytes(raw[: 144 + group_length] + body)
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_outcome(deflated)), daemon=True)
    reader.start()
    reader.join(10)
    assert outcome, "the reader did not return within 10 s"


def _outcome(path: Path) -> object:
    try:
        return read_image(path)
    except ImageReadError as error:
        return error
