"""Whatever bytes arrive, the readers answer with an image or ImageReadError, never a crash."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lungseg.errors import ImageReadError
from lungseg.imaging import read_image

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
