from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_covid_kaggle_like, write_finding_lungs_like, write_medseg_like

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.dataset import build as build_module
from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.dataset.store import MANIFEST_COLUMNS, BuiltDataset
from lungseg.errors import DatasetError


@pytest.fixture
def sources(tmp_path: Path) -> list[str]:
    return [
        str(write_finding_lungs_like(tmp_path / "finding", count=6)),
        str(write_medseg_like(tmp_path / "medseg", count=5)),
        str(write_covid_kaggle_like(tmp_path / "covid", cases=3, slices=8)),
    ]


def test_build_writes_split_manifest_arrays_config_and_report(tmp_path: Path, sources) -> None:
    out = tmp_path / "built"
    summary = build_dataset(BuildConfig(sources=sources, seed=1), out)
    assert summary.slices_stored == 6 + 5 + 3 * 4  # the volumes' 2+2 lung-free slices are dropped
    assert summary.lung_free_dropped == 3 * 4
    dataset = BuiltDataset(out)
    assert list(dataset.rows[0].to_csv()) == list(MANIFEST_COLUMNS)

    # No patient in two splits, every source in every split.
    splits_of: dict[str, set[str]] = {}
    for row in dataset.rows:
        splits_of.setdefault(row.patient, set()).add(row.split)
    assert all(len(s) == 1 for s in splits_of.values())
    for source in ("finding", "medseg", "covid"):
        assert {r.split for r in dataset.rows if r.source == source} == {
            "train",
            "val",
            "test",
        }

    # Arrays come back as stored: HU int16 and display uint8, sides where the source has them.
    kinds = {}
    for record in dataset.iter_split():
        kinds[record.row.source] = (record.intensity.value, record.image.dtype)
        assert record.lung.shape == record.image.shape
        assert record.lung.any()
        if record.row.source == "covid":
            assert set(np.unique(record.lung)) == {0, LUNG_RIGHT, LUNG_LEFT}
    assert kinds["finding"] == ("hu", np.dtype(np.int16))
    assert kinds["medseg"] == ("display", np.dtype(np.uint8))
    medseg_row = next(r for r in dataset.rows if r.source == "medseg")
    assert medseg_row.source_split in {"train", "test"}
    assert medseg_row.infection_labels == "typed"

    config = json.loads((out / "build_config.json").read_text())
    assert config["seed"] == 1
    assert config["sources"] == sources
    report = (out / "report" / "report.md").read_text()
    assert "Slices per split" in report
    for picture in ("samples_train.png", "intensity_histogram.png", "lung_fraction.png"):
        assert (out / "report" / picture).stat().st_size > 1000
    assert not list(tmp_path.glob(".built.*"))


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path, sources) -> None:
    def splits(seed: int, name: str) -> dict[str, str]:
        build_dataset(BuildConfig(sources=sources, seed=seed), tmp_path / name)
        return {r.slice_id: r.split for r in BuiltDataset(tmp_path / name).rows}

    first = splits(7, "a")
    assert first == splits(7, "b")
    assert first != splits(8, "c")


def test_a_share_of_lung_free_slices_can_be_kept(tmp_path: Path, sources) -> None:
    summary = build_dataset(BuildConfig(sources=sources, keep_lung_free=1.0), tmp_path / "all")
    assert summary.lung_free_kept == 12
    assert summary.lung_free_dropped == 0
    rows = BuiltDataset(tmp_path / "all").rows
    assert sum(float(r.lung_fraction) == 0 for r in rows) == 12


def test_qc_flagged_slices_are_stored_listed_and_left_out(tmp_path: Path) -> None:
    root = write_finding_lungs_like(tmp_path / "finding", count=4)
    mask_path = root / "2d_masks" / "ID_0002_Z_0102.png"
    from PIL import Image

    mask = np.array(Image.open(mask_path))
    mask[:12, :] = 1  # the air in front of the patient
    Image.fromarray(mask).save(mask_path)
    build_dataset(BuildConfig(sources=[str(root)]), tmp_path / "out")
    dataset = BuiltDataset(tmp_path / "out")
    flagged = [r for r in dataset.rows if r.qc_flags]
    assert [r.patient for r in flagged] == ["ID_0002"]
    assert not flagged[0].use
    assert "ID_0002" not in {r.patient for r in dataset.select()}
    assert "ID_0002" in (tmp_path / "out" / "qc.csv").read_text()
    assert (tmp_path / "out" / "report" / "qc_flagged.png").exists()


def test_unreadable_case_is_reported_and_the_build_goes_on(tmp_path: Path) -> None:
    root = write_finding_lungs_like(tmp_path / "finding", count=3)
    (root / "2d_images" / "ID_0001_Z_0101.tif").write_bytes(b"II*\x00broken")
    summary = build_dataset(BuildConfig(sources=[str(root)]), tmp_path / "out")
    assert summary.slices_stored == 2
    assert [Path(p).name for p, _ in summary.unreadable] == ["ID_0001_Z_0101.tif"]
    assert "Unreadable files" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, sources) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already exists"):
        build_dataset(BuildConfig(sources=sources), out)
    assert (out / "keep.txt").exists()
    build_dataset(BuildConfig(sources=sources), out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / "manifest.csv").exists()


def test_interrupted_build_leaves_nothing_half_written(
    tmp_path: Path, sources, monkeypatch
) -> None:
    calls = []
    real_load = build_module.load_case

    def interrupted(case):
        calls.append(case)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_load(case)

    monkeypatch.setattr(build_module, "load_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(BuildConfig(sources=sources), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"keep_lung_free": 1.5}, "keep_lung_free"),
        ({"slice_step": 0}, "slice_step"),
        ({"fractions": (0.5, 0.5, 0.5)}, "fractions"),
    ],
)
def test_bad_configuration_is_refused(kwargs, problem) -> None:
    with pytest.raises(DatasetError, match=problem):
        BuildConfig(sources=["x"], **kwargs)


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    a = write_finding_lungs_like(tmp_path / "a" / "data", count=2)
    b = write_finding_lungs_like(tmp_path / "b" / "data", count=2)
    with pytest.raises(DatasetError, match="both named"):
        build_dataset(BuildConfig(sources=[str(a), str(b)]), tmp_path / "out")


def test_volumes_and_dicom_series_with_nifti_masks(tmp_path: Path) -> None:
    from synthetic import ct_volume, write_dicom_series, write_nifti

    root = tmp_path / "scans"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    hu, lungs = ct_volume(slices=6, size=48, lung_free=1)
    write_dicom_series(root / "images" / "patient_a", hu)
    write_nifti(root / "masks" / "patient_a.nii.gz", (lungs > 0).astype(np.uint8))
    write_nifti(root / "images" / "patient_b.nii.gz", hu)
    write_nifti(root / "masks" / "patient_b.nii.gz", lungs)
    summary = build_dataset(BuildConfig(sources=[str(root)], slice_step=2), tmp_path / "out")
    rows = BuiltDataset(tmp_path / "out").rows
    assert {r.case_id for r in rows} == {"scans/patient_a", "scans/patient_b"}
    assert summary.slices_stored == 2 * 2  # slices 0, 2, 4 kept by the step; 0 has no lung
    assert {r.slice_index for r in rows} == {"2", "4"}
    assert {r.spacing_row_mm for r in rows} == {0.8}
    sides = {r.case_id: r.has_sides for r in rows}
    assert sides == {"scans/patient_a": False, "scans/patient_b": True}
    with (tmp_path / "out" / "manifest.csv").open(newline="") as handle:
        stored = list(csv.DictReader(handle))
    assert [r.to_csv() for r in rows] == stored  # the typed row round-trips its CSV text


def test_the_report_tables_count_what_the_manifest_says() -> None:
    from lungseg.core.labels import InfectionLabels
    from lungseg.dataset.report import check_table, split_table
    from lungseg.dataset.store import ManifestRow
    from lungseg.imaging import Intensity

    def row(source: str, patient: str, split: str, flags: tuple[str, ...] = ()) -> ManifestRow:
        return ManifestRow(
            f"{source}/{patient}#0", f"{source}/{patient}", patient, source, "f", "", split,
            8, 8, None, None, Intensity.HU, 0.3, True, InfectionLabels.NONE, 0.0, True,
            flags, not flags, "", "a.npz", 0,
        )  # fmt: skip

    rows = [
        row("a", "p1", "train"),
        row("a", "p1", "train"),
        row("a", "p2", "test"),
        row("b", "q1", "train", ("mask_outside_body",)),  # flagged: not used
        row("b", "q2", "val"),
    ]
    assert split_table(rows) == [
        ["a", "2 (1)", "0 (0)", "1 (1)"],
        ["b", "0 (0)", "1 (1)", "0 (0)"],
        ["all", "2", "1", "1"],
    ]
    checks = {r[0]: r for r in check_table(rows)}
    assert checks["b"][1:3] == [2, 2] and checks["b"][-1] == 1 and checks["a"][-1] == 0
