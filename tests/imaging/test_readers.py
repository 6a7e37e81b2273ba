from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1
from synthetic import (
    LPS_AFFINE,
    ct_slice,
    ct_volume,
    display_slice,
    write_dicom_series,
    write_dicom_slice,
    write_nifti,
    write_png,
    write_tiff_hu,
    zip_files,
)

from lungseg.errors import ImageReadError, TooLargeError
from lungseg.imaging import Intensity, read_image, read_mask


@pytest.fixture
def volume() -> tuple[np.ndarray, np.ndarray]:
    return ct_volume(slices=6, size=48, lung_free=1)


# --- NIfTI -------------------------------------------------------------------------


def test_nifti_hu_volume_keeps_values_and_geometry(tmp_path: Path, volume) -> None:
    hu, _ = volume
    image = read_image(write_nifti(tmp_path / "ct.nii.gz", hu))
    assert image.intensity is Intensity.HU
    assert image.array.dtype == np.int16
    assert image.array.shape == hu.shape
    np.testing.assert_array_equal(image.array, hu)
    assert image.geometry.spacing == pytest.approx((5.0, 0.8, 0.8))
    assert image.geometry.orientation == "LPS"


@pytest.mark.parametrize(
    "flip_axes",
    [(), (0,), (1,), (2,), (0, 1), (0, 1, 2)],
)
def test_nifti_stored_in_any_axis_direction_reads_the_same(
    tmp_path: Path, volume, flip_axes
) -> None:
    """The same patient stored with flipped voxel axes (and matching affine) reads the same."""
    hu, _ = volume
    data = np.transpose(hu, (2, 1, 0))  # (i, j, k) in LPS order
    affine = LPS_AFFINE.copy()
    for axis in flip_axes:
        data = np.flip(data, axis)
        # flipping voxel axis `axis`: index n now holds old index (N-1-n)
        affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        affine[:3, axis] *= -1
    path = tmp_path / "flipped.nii"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    np.testing.assert_array_equal(read_image(path).array, hu)


def test_nifti_transposed_in_plane_reads_the_same(tmp_path: Path, volume) -> None:
    hu, _ = volume
    data = np.transpose(hu, (1, 2, 0))  # (row, col, slice): i runs posterior, j runs left
    affine = np.array([[0, -0.8, 0, 0], [-0.8, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    path = tmp_path / "transposed.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    np.testing.assert_array_equal(read_image(path).array, hu)


def test_nifti_display_volume_is_told_apart_from_hu(tmp_path: Path, volume) -> None:
    hu, _ = volume
    image = read_image(
        write_nifti(tmp_path / "radiopaedia.nii", display_slice(hu).astype(np.float32))
    )
    assert image.intensity is Intensity.DISPLAY
    assert image.array.dtype == np.uint8


def test_nifti_4d_is_refused_but_trailing_singleton_is_fine(tmp_path: Path, volume) -> None:
    hu, _ = volume
    data = np.transpose(hu, (2, 1, 0))
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), LPS_AFFINE), str(tmp_path / "4d.nii"))
    with pytest.raises(ImageReadError, match=r"4d\.nii: 4D volume"):
        read_image(tmp_path / "4d.nii")
    nib.save(nib.Nifti1Image(data[..., np.newaxis], LPS_AFFINE), str(tmp_path / "one.nii"))
    assert read_image(tmp_path / "one.nii").array.shape == hu.shape


def test_truncated_nifti_raises_read_error_naming_the_file(tmp_path: Path, volume) -> None:
    hu, _ = volume
    path = write_nifti(tmp_path / "ct.nii.gz", hu)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


# --- DICOM -------------------------------------------------------------------------


def test_dicom_series_is_sorted_by_position_with_hu_and_spacing(tmp_path: Path, volume) -> None:
    hu, _ = volume
    write_dicom_series(tmp_path / "series", hu, spacing=(2.5, 0.7, 0.7))
    image = read_image(tmp_path / "series")
    assert image.intensity is Intensity.HU
    np.testing.assert_array_equal(image.array, hu)
    assert image.geometry.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert image.geometry.orientation == "LPS"


def test_dicom_slice_stored_flipped_is_shown_in_radiological_view(tmp_path: Path) -> None:
    hu, _ = ct_slice(48)
    standard = read_image(write_dicom_slice(tmp_path / "a.dcm", hu))
    # Columns running to the patient's right: the stored image is mirrored left-right.
    mirrored = read_image(
        write_dicom_slice(tmp_path / "b.dcm", hu[:, ::-1], orientation=(-1, 0, 0, 0, 1, 0))
    )
    np.testing.assert_array_equal(standard.array, hu)
    np.testing.assert_array_equal(mirrored.array, hu)
    assert standard.geometry.spacing == pytest.approx((0.8, 0.8))


def test_dicom_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM images"):
        read_image(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not dicom")
    with pytest.raises(ImageReadError, match="no DICOM images"):
        read_image(tmp_path / "notes")


# --- photos --------------------------------------------------------------------------


def test_png_8bit_is_display(tmp_path: Path) -> None:
    grey = display_slice(ct_slice(40)[0])
    image = read_image(write_png(tmp_path / "slice.png", grey))
    assert image.intensity is Intensity.DISPLAY
    np.testing.assert_array_equal(image.array, grey)
    assert image.geometry.spacing is None


def test_png_16bit_ct_stored_values_become_hu(tmp_path: Path) -> None:
    hu = ct_slice(40)[0]
    path = tmp_path / "slice16.png"
    Image.fromarray((hu.astype(np.int32) + 1024).astype(np.uint16)).save(path)
    image = read_image(path)
    assert image.intensity is Intensity.HU
    np.testing.assert_array_equal(image.array, hu)


def test_tiff_with_negative_values_is_hu(tmp_path: Path) -> None:
    hu = ct_slice(40)[0]
    image = read_image(write_tiff_hu(tmp_path / "slice.tif", hu))
    assert image.intensity is Intensity.HU
    np.testing.assert_array_equal(image.array, hu)


def test_rgb_and_jpeg_photos_become_grey_display(tmp_path: Path) -> None:
    grey = display_slice(ct_slice(40)[0])
    rgb = np.repeat(grey[..., None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    image = read_image(tmp_path / "photo.jpg")
    assert image.intensity is Intensity.DISPLAY
    assert image.array.shape == grey.shape
    assert np.abs(image.array.astype(int) - grey).mean() < 4


def test_exif_rotated_photo_is_turned_upright(tmp_path: Path) -> None:
    grey = display_slice(ct_slice(40)[0])[:, :30]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(np.rot90(grey, 1)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "phone.jpg")
    assert image.array.shape == grey.shape
    assert "EXIF orientation applied" in image.notes


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("upload.png", b"", "file is empty"),
        ("upload.bin", b"hello, this is not an image at all", "unknown file type"),
        ("upload.png", b"hello, this is not an image at all", "not a valid .png file"),
        ("upload.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not a readable image|corrupt"),
        ("upload.nii.gz", b"\x1f\x8b\x08\x00garbage", "upload.nii.gz: "),
    ],
)
def test_bad_files_raise_one_clear_error(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=problem):
        read_image(path)


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    path = write_png(tmp_path / "cut.png", display_slice(ct_slice(64)[0]))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(path)


def test_missing_file_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nothing.png")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # a small file that would decode to 81 Mpx
    assert path.stat().st_size < 200_000
    with pytest.raises(TooLargeError, match="more than the limit of 67108864 pixels"):
        read_image(path)


# --- masks ---------------------------------------------------------------------------


def test_mask_follows_the_image_orientation_and_shape_is_checked(tmp_path: Path, volume) -> None:
    hu, labels = volume
    data, mask = np.transpose(hu, (2, 1, 0))[::-1], np.transpose(labels, (2, 1, 0))[::-1]
    affine = LPS_AFFINE.copy()
    affine[:3, 3] += affine[:3, 0] * (data.shape[0] - 1)
    affine[:3, 0] *= -1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(tmp_path / "ct.nii"))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(mask), affine), str(tmp_path / "mask.nii"))
    image = read_image(tmp_path / "ct.nii")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.nii", like=image).array, labels)
    write_png(tmp_path / "small.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ImageReadError, match="does not match image shape"):
        read_mask(tmp_path / "small.png", like=image)


def test_colour_and_fractional_masks_are_refused(tmp_path: Path) -> None:
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[2:4, 2:4] = (255, 0, 0)
    write_png(tmp_path / "colour.png", colour)
    with pytest.raises(ImageReadError, match="colour mask"):
        read_mask(tmp_path / "colour.png")
    nib.save(
        nib.Nifti1Image(np.full((4, 4, 2), 0.5, np.float32), LPS_AFFINE), str(tmp_path / "prob.nii")
    )
    with pytest.raises(ImageReadError, match="not integer labels"):
        read_mask(tmp_path / "prob.nii")


def test_compressed_dicom_as_pacs_exports_it(tmp_path: Path) -> None:
    """JPEG 2000 (lossless) and JPEG Lossless (process 14) decode with the core install."""
    hu, _ = ct_slice(64)
    plain = write_dicom_slice(tmp_path / "plain.dcm", hu)
    ds = pydicom.dcmread(plain)
    ds.compress(JPEG2000Lossless)  # encoded by pylibjpeg-openjpeg
    ds.save_as(tmp_path / "j2k.dcm")
    image = read_image(tmp_path / "j2k.dcm")
    assert image.intensity is Intensity.HU
    np.testing.assert_array_equal(image.array, read_image(plain).array)
    # pydicom cannot encode JPEG Lossless; its own sample file (process 14, SV1) is decoded
    sample = get_testdata_file("SC_rgb_jpeg_gdcm.dcm", download=False)
    assert sample is not None, "pydicom's bundled test file is missing"
    assert str(pydicom.dcmread(sample).file_meta.TransferSyntaxUID) == JPEGLosslessSV1
    assert read_image(sample).array.shape == (100, 100)


@pytest.mark.parametrize(("slope", "intercept"), [(1, -1024), (2, -32768), (1, 0), (0.5, -1024.0)])
def test_dicom_rescale_gives_the_float_definition_of_hu_integer_or_not(
    tmp_path: Path, slope: float, intercept: float
) -> None:
    """HU = round(pixel * slope + intercept), clipped to int16, whichever arithmetic the
    reader takes (integers for CT's usual integer rescale): the whole 16-bit range,
    values that clip included."""
    path = write_dicom_slice(tmp_path / "s.dcm", np.zeros((256, 256), np.int16))
    ds = pydicom.dcmread(path)
    pixels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    ds.PixelData = pixels.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(path, enforce_file_format=True)
    expected = np.clip(np.round(pixels.astype(np.float32) * slope + intercept), -32768, 32767)
    image = read_image(path)
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, expected.astype(np.int16))


def test_a_zip_unpacks_only_what_starts_as_dicom(tmp_path: Path) -> None:
    """Issue 32: every member of a zip was unpacked and forced through pydicom: a 4 MB
    zip of zeros wrote gigabytes to disk. Members that do not start as DICOM files are
    now skipped before anything of them is written, and the series beside them reads."""

    from lungseg.core.files import unzip_flat
    from lungseg.imaging.readers import _looks_like_dicom

    volume, _ = ct_volume(slices=4, size=32, lung_free=1)
    series = write_dicom_series(tmp_path / "series", volume)
    junk = {"zeros.dcm": bytes(64 * 1024 * 1024), "README.txt": b"exported by a PACS"}
    archive = zip_files(tmp_path / "series.zip", series, folder="dicom", extra=junk)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    written = unzip_flat(
        archive,
        unpacked,
        lambda i, _: f"{i}.dcm",
        max_files=100,
        max_bytes=1e9,
        wanted=_looks_like_dicom,
    )
    assert len(written) == 4 and sum(p.stat().st_size for p in written) < 1e6
    image = read_image(archive)
    assert image.array.shape[0] == 4


def test_a_zip_may_unpack_to_what_a_scan_can_be(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("a.dcm", bytes(1))
    data = bytearray(archive.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (2 * 1024**3).to_bytes(4, "little")  # declares 2 GB
    archive.write_bytes(bytes(data))
    with pytest.raises(TooLargeError, match=r"1\.5 GB"):
        read_image(archive)


def test_reading_a_zip_or_a_series_stops_when_asked(tmp_path: Path) -> None:
    """Issue 32: a hung-up client's zip was unpacked and read to the end. ``stop`` is
    asked between files: reading ends there, and what was unpacked is removed."""
    import os
    import tempfile

    from lungseg.imaging.readers import ReadStopped

    volume, _ = ct_volume(slices=6, size=32, lung_free=1)
    series = write_dicom_series(tmp_path / "series", volume)
    archive = zip_files(tmp_path / "series.zip", series)
    asked = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) > 3

    mine = f"lungseg-zip-{os.getpid()}-"
    with pytest.raises(ReadStopped):
        read_image(archive, stop=after_three)
    assert len(asked) == 4  # stopped at once, not after the 6 files
    assert not list(Path(tempfile.gettempdir()).glob(f"{mine}*"))
    with pytest.raises(ReadStopped):
        read_image(tmp_path / "series", stop=lambda: True)
    assert read_image(archive, stop=lambda: False).array.shape[0] == 6
