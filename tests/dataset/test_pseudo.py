from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import ct_volume, write_dicom_series

from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.dataset.pseudo import threshold_lungs, write_pseudo_labelled
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.imaging import read_image


def test_threshold_labels_find_the_lungs_and_nothing_on_lung_free_levels(tmp_path: Path) -> None:
    hu, lungs = ct_volume(slices=8, size=64, lung_free=2)
    write_dicom_series(tmp_path / "scan", hu)
    labels = threshold_lungs(read_image(tmp_path / "scan"))
    np.testing.assert_array_equal(labels, lungs > 0)


def test_pseudo_labelled_scans_build_into_the_training_split(tmp_path: Path) -> None:
    hu, _ = ct_volume(slices=8, size=64, lung_free=2)
    write_dicom_series(tmp_path / "scan", hu)
    pictures = write_pseudo_labelled([tmp_path / "scan"], tmp_path / "pseudo")
    assert pictures[0].exists()
    build_dataset(
        BuildConfig(sources=[str(tmp_path / "pseudo")], keep_lung_free=1.0), tmp_path / "built"
    )
    rows = BuiltDataset(tmp_path / "built").rows
    assert len(rows) == 8
    assert {r.split for r in rows} == {"train"}  # one patient: never in test numbers


def test_threshold_labels_need_a_hu_volume(tmp_path: Path) -> None:
    from synthetic import display_slice, write_png

    write_png(tmp_path / "photo.png", display_slice(ct_volume(3, 32, 0)[0][1]))
    with pytest.raises(LungsegError, match="HU volume"):
        threshold_lungs(read_image(tmp_path / "photo.png"))
