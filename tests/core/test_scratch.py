"""Temporary folders with patient data never outlive their process (issue 32): removed
when done and on SIGTERM, swept at the next start when a process was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic import ct_volume, write_dicom_series, zip_files

from lungseg.core.scratch import KINDS, PREFIX, make_folder, scratch_folder, sweep


def test_the_folders_of_dead_processes_are_swept_and_the_living_ones_kept(
    tmp_path: Path,
) -> None:
    dead = [tmp_path / f"{PREFIX}{kind}-999999999-abc" for kind in KINDS]
    alive = [tmp_path / f"{PREFIX}{kind}-{os.getpid()}-abc" for kind in KINDS]
    other = tmp_path / "lungseg-notes"  # not a scratch folder of lungseg's
    for folder in [*dead, *alive, other]:
        folder.mkdir()
        (folder / "0001.dcm").write_bytes(b"a patient's slice")
    assert sweep(tmp_path) == sorted(dead)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [other.name, *(p.name for p in alive)]
    )


def test_a_scratch_folder_is_removed_however_its_block_ends() -> None:
    with pytest.raises(RuntimeError), scratch_folder("zip") as folder:
        (folder / "member.dcm").write_bytes(b"x")
        raise RuntimeError("a corrupt member")
    assert not folder.exists()
    made = make_folder("upload")
    assert made.name.startswith(f"{PREFIX}upload-{os.getpid()}-")
    made.rmdir()


@pytest.mark.slow
def test_sigterm_during_a_zipped_series_leaves_no_patient_data(tmp_path: Path) -> None:
    """`lungseg predict` on a zipped series under `timeout` (SIGTERM) left the unzipped
    series in the temporary folder: the series is now removed on the way out, and a
    killed run's folder is swept by the next start."""
    series = tmp_path / "series"
    volume, _ = ct_volume(slices=8, size=128, lung_free=1)
    write_dicom_series(series, np.tile(volume, (40, 1, 1)).astype(np.int16))  # 320 files
    archive = zip_files(tmp_path / "series.zip", sorted(series.iterdir()))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    left = scratch / f"{PREFIX}zip-999999999-old"  # what a killed run left
    left.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    run = subprocess.Popen(
        [sys.executable, "-m", "lungseg", "predict", str(archive), "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(scratch.glob(f"{PREFIX}zip-{run.pid}-*")):
        time.sleep(0.01)
    assert list(scratch.glob(f"{PREFIX}zip-{run.pid}-*")), "the series was never unzipped"
    run.send_signal(signal.SIGTERM)
    _, errors = run.communicate(timeout=60)
    assert run.returncode == 143, errors
    assert "terminated" in errors and str(left) in errors  # the old folder swept at start
    assert list(scratch.glob(f"{PREFIX}*")) == []  # (onnxruntime keeps a .ses file there)
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if ".partial-" in p.name]
