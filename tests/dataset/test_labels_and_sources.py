from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import (
    ct_volume,
    write_covid_kaggle_like,
    write_finding_lungs_like,
    write_medseg_like,
    write_nifti,
)

from lungseg.core.labels import (
    INFECTION_UNTYPED,
    LUNG_LEFT,
    LUNG_RIGHT,
    LUNG_SIDE_UNKNOWN,
    InfectionLabels,
    infection_labels,
    sided_lung_labels,
)
from lungseg.dataset.sources import covid_case_name, load_case, open_source
from lungseg.errors import DatasetError


@pytest.mark.parametrize("swap", [False, True])
def test_sides_come_from_position_not_label_numbers(swap: bool) -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 1:4] = 2 if swap else 1  # image left = patient's right
    mask[2:8, 6:9] = 1 if swap else 2
    labels, has_sides = sided_lung_labels(mask)
    assert has_sides
    assert (labels[2:8, 1:4] == LUNG_RIGHT).all()
    assert (labels[2:8, 6:9] == LUNG_LEFT).all()


def test_binary_lung_mask_has_no_sides() -> None:
    labels, has_sides = sided_lung_labels(np.array([[0, 255], [255, 0]], np.uint8))
    assert not has_sides
    assert labels.tolist() == [[0, LUNG_SIDE_UNKNOWN], [LUNG_SIDE_UNKNOWN, 0]]


def test_infection_schemes() -> None:
    typed = np.array([0, 1, 2, 3], np.uint8)
    assert infection_labels(typed, InfectionLabels.TYPED).tolist() == [0, 1, 2, 3]
    assert infection_labels(typed, InfectionLabels.BINARY).tolist() == [0] + [INFECTION_UNTYPED] * 3
    with pytest.raises(ValueError, match=r"0\.\.3"):
        infection_labels(np.array([5], np.uint8), InfectionLabels.TYPED)


@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("coronacases_org_001.nii", "coronacases_001"),
        ("coronacases_001.nii.gz", "coronacases_001"),
        ("radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm.nii", "radiopaedia_10_85902_1"),
        ("radiopaedia_10_85902_1.nii.gz", "radiopaedia_10_85902_1"),
    ],
)
def test_covid_names_agree_across_layouts(name: str, case: str) -> None:
    assert covid_case_name(name) == case


def test_kaggle_covid_layout_is_detected_and_loaded(tmp_path: Path) -> None:
    listing = open_source(write_covid_kaggle_like(tmp_path / "covid", cases=2))
    assert [c.stem for c in listing.cases] == ["coronacases_001", "radiopaedia_1_85901_1"]
    loaded = load_case(listing.cases[0])
    assert loaded.has_sides
    assert set(np.unique(loaded.lung)) == {0, LUNG_RIGHT, LUNG_LEFT}
    assert set(np.unique(loaded.infection)) == {0, INFECTION_UNTYPED}


def test_zenodo_covid_layout_is_detected(tmp_path: Path) -> None:
    root = tmp_path / "zenodo"
    for sub in ("COVID-19-CT-Seg_20cases", "Lung_Mask", "Infection_Mask"):
        (root / sub).mkdir(parents=True)
    hu, lungs = ct_volume(4, 32, lung_free=1)
    write_nifti(root / "COVID-19-CT-Seg_20cases" / "coronacases_002.nii.gz", hu)
    write_nifti(root / "Lung_Mask" / "coronacases_002.nii.gz", lungs)
    listing = open_source(root)
    assert [c.case_id for c in listing.cases] == ["zenodo/coronacases_002"]
    assert listing.cases[0].infection_mask is None


def test_paired_folders_group_slices_by_patient_and_read_the_source_split(tmp_path: Path) -> None:
    finding = open_source(write_finding_lungs_like(tmp_path / "finding", count=2))
    assert [(c.patient, c.slice_index) for c in finding.cases] == [
        ("ID_0000", 100),
        ("ID_0001", 101),
    ]
    medseg = open_source(write_medseg_like(tmp_path / "medseg", count=2))
    assert [c.source_split for c in medseg.cases] == ["test", "train"]
    assert all(c.infection_scheme is InfectionLabels.TYPED for c in medseg.cases)


def test_images_without_masks_are_listed(tmp_path: Path) -> None:
    root = write_finding_lungs_like(tmp_path / "finding", count=2)
    (root / "2d_masks" / "ID_0001_Z_0101.png").unlink()
    listing = open_source(root)
    assert len(listing.cases) == 1
    assert [p.name for p in listing.unmatched] == ["ID_0001_Z_0101.tif"]


def test_unknown_layout_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="unknown layout"):
        open_source(tmp_path / "other")
    with pytest.raises(DatasetError, match="unknown source kind"):
        open_source(tmp_path / "other", kind="kaggle")
