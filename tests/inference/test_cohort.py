"""Cohorts: many scans on a local Dask cluster of 2 worker processes, one summary CSV,
and a second run that does only what is left."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
from models import dark_is_lung_onnx, lungs_and_infection_onnx
from synthetic import ct_volume, write_nifti

from lungseg.cli import main
from lungseg.errors import LungsegError
from lungseg.inference.cohort import SUMMARY, cohort_inputs

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / SUMMARY).open(newline="") as handle:
        return {Path(r["input"]).name: r for r in csv.DictReader(handle)}


def test_a_cohort_runs_on_two_workers_and_resumes(tmp_path: Path) -> None:
    model = lungs_and_infection_onnx(tmp_path / "model.onnx")
    scans = tmp_path / "scans"
    scans.mkdir()
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    write_nifti(scans / "a.nii.gz", volume.astype(np.int16))
    write_nifti(scans / "b.nii.gz", volume[1:].astype(np.int16))
    (scans / "c.nii.gz").write_bytes(b"not a scan")
    out = tmp_path / "out"
    args = ["predict", str(scans), "--out", str(out), "--model", str(model), "--cohort"]
    assert main([*args, "--workers", "2", "--quiet"]) == 1  # c failed, a and b done
    rows = _rows(out)
    assert set(rows) == {"a.nii.gz", "b.nii.gz", "c.nii.gz"}
    assert rows["c.nii.gz"]["status"] == "failed" and "c.nii.gz" in rows["c.nii.gz"]["error"]
    for name in ("a.nii.gz", "b.nii.gz"):
        assert rows[name]["status"] == "ok" and float(rows[name]["total_ml"]) > 0
        assert rows[name]["severity_total"] != ""  # the network's infection head ran too
    assert rows["a.nii.gz"]["slices"] == "6" and rows["b.nii.gz"]["slices"] == "5"
    # each scan's check: a phantom holds no adult's lungs, and b's first slice cuts them
    assert rows["a.nii.gz"]["check_status"] == "review"
    assert "outside an adult's" in rows["a.nii.gz"]["check_reasons"]
    assert "cuts the lungs off" in rows["b.nii.gz"]["check_reasons"]
    assert rows["c.nii.gz"]["check_status"] == ""  # failed: no answer to check
    assert (out / "a_mask.nii.gz").is_file() and (out / "b_overlay.png").is_file()

    # the second run: a is finished (skipped), b lost a file (redone), c is fixed (done)
    a_written = (out / "a_mask.nii.gz").stat().st_mtime_ns
    (out / "b_mask.nii.gz").unlink()
    write_nifti(scans / "c.nii.gz", volume.astype(np.int16))
    assert main([*args, "--workers", "1", "--quiet"]) == 0
    rows = _rows(out)
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "ok")
    assert len(rows) == 3 and (out / "b_mask.nii.gz").is_file()
    assert (out / "a_mask.nii.gz").stat().st_mtime_ns == a_written
    # the local cluster's scratch folders are gone with it
    assert not list(Path(tempfile.gettempdir()).glob("lungseg-dask-*"))


def test_a_cohort_can_be_a_list_of_scans(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    volume, _ = ct_volume(slices=4, size=32, lung_free=1)
    write_nifti(tmp_path / "x" / "one.nii.gz", volume)
    listed = tmp_path / "cohort.csv"
    listed.write_text("path,age\nx/one.nii.gz,61\n")
    assert cohort_inputs([listed]) == [(tmp_path / "x" / "one.nii.gz").resolve()]
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx/one.nii.gz\n")
    with pytest.raises(LungsegError, match="'path' column"):
        cohort_inputs([bad])


def test_a_cohort_row_is_the_json_summary_flattened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cohort CSV is a view of the one summary (``result.Summary``): the numbers
    ``lungseg predict --json`` prints, for an answer and for a failure."""
    import json

    from lungseg.inference.batch import BatchSettings
    from lungseg.inference.cohort import cohort_row, segment_one
    from lungseg.inference.result import Failure, Summary

    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    scan = write_nifti(tmp_path / "a.nii.gz", volume.astype(np.int16))
    settings = BatchSettings(out=tmp_path / "out", model=str(model), infection=False)
    row = segment_one(str(scan), "a", settings)
    arguments = ["predict", str(scan), "--out", str(tmp_path / "json"), "--model", str(model)]
    assert main([*arguments, "--no-infection", "--json", "--quiet"]) == 0
    summary = Summary.model_validate_json(capsys.readouterr().out.strip())
    assert row["status"] == "ok" and row["kind"] == "volume" and row["slices"] == "6"
    assert row["total_ml"] == f"{summary.lung.total:.1f}" != "0.0"
    assert row["right_ml"] == f"{summary.lung.right:.1f}"
    assert row["check_status"] == summary.check.status
    assert row["check_reasons"] == " | ".join(summary.check.reasons)
    assert json.loads(row["outputs"]) == ["a_mask.nii.gz", "a_overlay.png", "a_statistics.json"]
    assert (tmp_path / "out" / "a_mask.nii.gz").is_file()
    failed = cohort_row(Failure(file="b.nii.gz", error="b.nii.gz: truncated"), "b")
    assert failed["status"] == "failed" and failed["error"] == "b.nii.gz: truncated"
    assert failed["input"] == "b.nii.gz" and failed["total_ml"] == ""


def test_a_cohort_column_holds_millilitres_or_nothing_and_the_row_says_why(
    tmp_path: Path,
) -> None:
    """Issue 32: a scan without voxel sizes (and a slice) had its voxel counts (mm²)
    written into the ``*_ml`` columns ("593378.0 mL")."""
    import nibabel as nib

    from lungseg.inference.batch import BatchSettings
    from lungseg.inference.cohort import segment_one

    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    bare = tmp_path / "bare.nii"
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), None), bare)  # no space stated
    settings = BatchSettings(out=tmp_path / "out", model=str(model), infection=False)
    row = segment_one(str(bare), "bare", settings)
    assert row["status"] == "ok"
    assert row["total_ml"] == row["right_ml"] == row["left_ml"] == ""
    assert "no volumes in mL: the file gives no voxel size" in row["notes"]
    sized = segment_one(str(write_nifti(tmp_path / "a.nii.gz", volume)), "a", settings)
    assert float(sized["total_ml"]) > 0 and "no volumes in mL" not in sized["notes"]


def test_an_excel_list_and_a_nul_byte_are_read_or_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    volume, _ = ct_volume(slices=4, size=32, lung_free=1)
    write_nifti(tmp_path / "x" / "one.nii.gz", volume)
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufeffpath,age\r\nx/one.nii.gz,61\r\n".encode())  # UTF-8 with BOM
    assert cohort_inputs([excel]) == [(tmp_path / "x" / "one.nii.gz").resolve()]
    nul = tmp_path / "nul.csv"
    nul.write_text("path\nx/one\x00.nii.gz\n")
    with pytest.raises(LungsegError, match="line 2: a path with a NUL byte"):
        cohort_inputs([nul])
    with pytest.raises(LungsegError, match="NUL byte"):
        cohort_inputs([Path("scan\x00.nii")])


def test_a_second_cohort_into_the_same_folder_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    """Issue 32: two runs into one --out lost rows (each rewrote the CSV); the folder's
    lock is held for the run and goes with the process."""
    import subprocess
    import sys

    from lungseg.inference.batch import BatchSettings
    from lungseg.inference.cohort import LOCK, run_cohort

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; h = open(sys.argv[1], 'a+'); h.write('pid 4242');"
            " h.flush(); fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True);"
            " time.sleep(30)",
            str(out / LOCK),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LungsegError, match=r"another lungseg predict --cohort .*pid 4242"):
            run_cohort([tmp_path / "a.nii.gz"], BatchSettings(out=out))
        assert not (out / SUMMARY).exists()  # nothing of the refused run written
    finally:
        holder.kill()
        holder.wait()


def test_the_size_limits_hold_for_a_cohort_scan(tmp_path: Path) -> None:
    """Issue 32 saw --max-slices and --max-voxels ignored in cohort mode: every runner
    now reads with the one BatchSettings' limits."""
    from lungseg.imaging.readers import ReadLimits
    from lungseg.inference.batch import BatchSettings
    from lungseg.inference.cohort import segment_one

    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    scan = write_nifti(tmp_path / "a.nii.gz", volume)
    limits = ReadLimits(max_slices=4)
    settings = BatchSettings(out=tmp_path / "out", model=str(model), limits=limits)
    row = segment_one(str(scan), "a", settings)
    assert row["status"] == "failed" and "4" in row["error"] and "slices" in row["error"]


def test_a_scan_that_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    """Issue 32: one scan that killed its worker aborted the cohort with a KilledWorker
    traceback, and every re-run the same way. It now gets a failed row with the reason;
    the other scans are done."""
    import sys

    from lungseg.inference.batch import BatchSettings
    from lungseg.inference.cohort import run_cohort

    sys.path.insert(0, str(Path(__file__).parent))  # the workers import the task from here
    from killer import kill_on_poison

    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    volume, _ = ct_volume(slices=4, size=32, lung_free=1)
    scans = [
        write_nifti(tmp_path / name, volume) for name in ("a.nii.gz", "poison.nii.gz", "b.nii.gz")
    ]
    settings = BatchSettings(out=tmp_path / "out", model=str(model), infection=False)
    run_cohort(scans, settings, workers=1, work=kill_on_poison)
    rows = _rows(tmp_path / "out")
    assert rows["a.nii.gz"]["status"] == rows["b.nii.gz"]["status"] == "ok", rows
    assert rows["poison.nii.gz"]["status"] == "failed"
    assert "its worker process died" in rows["poison.nii.gz"]["error"]
