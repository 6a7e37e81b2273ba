"""Whatever bytes arrive, the readers answer with an image or ImageReadError, never a crash."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from synthetic import ct_volume, display_slice, write_dicom_slice, write_nifti, write_png

from lungseg.errors import ImageReadError
from lungseg.imaging import read_image

pytestmark = pytest.mark.slow

SUFFIXES = [".png", ".jpg", ".tif", ".dcm", ".nii", ".nii.gz", ".bin"]


def _png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    array = np.arange(width * height, dtype=np.uint32).reshape(height, width)
    if mode == "I;16":
        Image.fromarray((array * 97 % 65536).astype(np.uint16)).save(buffer, format="PNG")
    elif mode == "RGB":
        Image.fromarray(np.stack([array % 256] * 3, -1).astype(np.uint8)).save(buffer, format="PNG")
    else:
        Image.fromarray((array % 256).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_never_crash(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(data)
    try:
        read_image(path)
    except ImageReadError as error:
        assert str(path) in str(error)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    mode=st.sampled_from(["L", "I;16", "RGB"]),
    cut=st.one_of(st.none(), st.integers(0, 200)),
)
def test_odd_sizes_modes_and_truncations(
    tmp_path: Path, width: int, height: int, mode: str, cut
) -> None:
    data = _png(width, height, mode)
    path = tmp_path / "slice.png"
    path.write_bytes(data if cut is None else data[:cut])
    try:
        image = read_image(path)
    except ImageReadError:
        assert cut is not None  # only a truncated file may be refused
        return
    assert image.array.shape == (height, width)


def _valid_files(folder: Path) -> dict[str, bytes]:
    """One small valid file of each kind a user uploads, to be damaged byte by byte."""
    hu, _ = ct_volume(slices=3, size=16, lung_free=0)
    files = {
        ".dcm": write_dicom_slice(folder / "a.dcm", hu[1]),
        ".nii": write_nifti(folder / "a.nii", hu),
        ".nii.gz": write_nifti(folder / "a.nii.gz", hu),
        ".png": write_png(folder / "a.png", display_slice(hu[1])),
    }
    return {suffix: path.read_bytes() for suffix, path in files.items()}


VALID: dict[str, bytes] = {}


@settings(
    max_examples=int(os.environ.get("LUNGSEG_FUZZ_EXAMPLES", "150")),  # more for a long hunt
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    suffix=st.sampled_from([".dcm", ".nii", ".nii.gz", ".png"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_damaged_valid_files_are_read_or_refused_never_a_bug(
    tmp_path: Path, suffix: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """Header fields, sizes, tags and offsets set to odd values: the readers answer with
    an image or ``ImageReadError``. Any other exception is a bug (no catch-all hides it)."""
    if not VALID:
        VALID.update(_valid_files(tmp_path))
    data = bytearray(VALID[suffix])
    for position, value in edits:
        data[position % len(data)] = value
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data if cut is None else data[: cut % len(data)]))
    try:
        image = read_image(path)
    except ImageReadError as error:
        assert str(path) in str(error)
        return
    assert image.array.ndim in (2, 3) and image.array.size > 0
