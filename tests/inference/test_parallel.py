"""A long list of pictures segmented by worker processes: the same outcomes, in the
same order, and the same files as one process gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import ct_slice, write_tiff_hu

from lungseg.inference import batch
from lungseg.inference.batch import (
    PARALLEL_MIN_PICTURES,
    BatchSettings,
    process_workers,
    run_batch,
)


def _content(path: Path) -> object:
    """A written file's content; a statistics file's without its timings (they differ
    from run to run) and with its files' names only."""
    if path.name.endswith("_statistics.json"):
        import json

        summary = json.loads(path.read_text())
        summary.pop("timings_ms")
        summary["outputs"] = [Path(name).name for name in summary["outputs"]]  # their folders
        return summary
    return path.read_bytes()


def _same_outcomes(first: list[batch.Outcome], second: list[batch.Outcome]) -> None:
    """The two runs gave each input the same answer and the same files."""
    for one, two in zip(first, second, strict=True):
        assert (one.error is None) == (two.error is None), (one.error, two.error)
        if one.prediction is not None:
            assert two.prediction is not None
            assert two.prediction.measures == one.prediction.measures
        assert [p.name for p in one.written] == [p.name for p in two.written]
        for a, b in zip(one.written, two.written, strict=True):
            assert _content(a) == _content(b), a.name


def test_worker_processes_match_one_process_input_by_input(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [write_tiff_hu(inputs / f"s{i}.tif", ct_slice(128, seed=i)[0]) for i in range(5)]
    broken = inputs / "s2b.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    paths.insert(2, broken)

    alone = list(run_batch(BatchSettings(out=tmp_path / "alone"), paths))
    workers = list(run_batch(BatchSettings(out=tmp_path / "workers"), paths, processes=2))

    assert [o.path for o in workers] == paths  # input order, whichever worker ends first
    _same_outcomes(alone, workers)
    broken_outcome = workers[paths.index(broken)]
    assert broken_outcome.error is not None and "s2b.png" in broken_outcome.error


def test_only_a_long_list_of_pictures_on_several_cores_gets_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pictures = [tmp_path / f"p{i}.png" for i in range(PARALLEL_MIN_PICTURES)]
    for path in pictures:
        path.write_bytes(b"")
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    assert process_workers(pictures) == 0  # two cores: this process, two slices at a time
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)
    assert process_workers(pictures) == 4
    assert process_workers(pictures[:-1]) == 0  # too short to pay for starting workers
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    assert process_workers([*pictures, scan]) == 0  # scans run one at a time
    folder = tmp_path / "series"
    folder.mkdir()
    assert process_workers([*pictures[:-1], folder]) == 0
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 1)
    assert process_workers(pictures) == 0
    assert process_workers(pictures[:2], requested=3) == 3  # as asked (--processes)
    assert process_workers(pictures, requested=0) == 0
    assert process_workers([scan, scan], requested=2) == 0  # never for scans


def test_lungseg_predict_gives_a_long_list_of_pictures_to_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from lungseg.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        write_tiff_hu(inputs / f"s{i}.tif", ct_slice(96, seed=i)[0])
    monkeypatch.setattr(batch, "PARALLEL_MIN_PICTURES", 4)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)

    def one_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a long list of pictures goes to worker processes")

    monkeypatch.setattr(batch, "segment", one_process)  # this process segments nothing
    assert main(["predict", str(inputs), "--out", str(tmp_path / "out"), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["file"]).name for r in records] == [f"s{i}.tif" for i in range(4)]
    for i in range(4):
        assert (tmp_path / "out" / f"s{i}_overlay.png").is_file()


def test_two_slices_segmented_at_once_give_what_one_at_a_time_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 31: a list of slices runs two at a time in this process (threads sharing one
    Predictor); outcomes come in input order with the very files one at a time gives."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [write_tiff_hu(inputs / f"s{i}.tif", ct_slice(96, seed=i)[0]) for i in range(7)]
    broken = inputs / "s3b.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    paths.insert(3, broken)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    assert batch.picture_lanes(paths) == 2
    together = list(run_batch(BatchSettings(out=tmp_path / "together"), paths))
    monkeypatch.setattr(batch, "LANES", 1)
    assert batch.picture_lanes(paths) == 1
    alone = list(run_batch(BatchSettings(out=tmp_path / "alone"), paths))
    assert [o.path for o in together] == paths
    _same_outcomes(alone, together)


def test_only_lists_of_single_files_run_two_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [tmp_path / name for name in ("a.png", "b.dcm", "c.jpg")]
    for path in files:
        path.write_bytes(b"")
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)
    assert batch.picture_lanes(files) == batch.LANES
    assert batch.picture_lanes(files[:1]) == 1  # one input: nothing to overlap
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    assert batch.picture_lanes([*files, scan]) == 1  # a scan may fill memory alone
    folder = tmp_path / "series"
    folder.mkdir()
    assert batch.picture_lanes([*files, folder]) == 1
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 1)
    assert batch.picture_lanes(files) == 1


def _children(pid: int) -> set[int]:
    """The process ids of ``pid``'s pool workers (Linux /proc; not multiprocessing's
    resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in command:
                found.add(int(child))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc")
def test_a_killed_worker_costs_no_input_and_the_list_goes_on(tmp_path: Path) -> None:
    """Issue 32: one dead worker ended the batch (11 of 67 pictures written). The inputs
    under way are run again alone; every input gets its outcome, in order."""
    import os
    import signal

    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [write_tiff_hu(inputs / f"s{i}.tif", ct_slice(96, seed=i)[0]) for i in range(10)]
    outcomes = []
    for outcome in run_batch(BatchSettings(out=tmp_path / "out"), paths, processes=2):
        if not outcomes:  # the pool is up: kill one of its workers under way
            os.kill(sorted(_children(os.getpid()))[0], signal.SIGKILL)
        outcomes.append(outcome)
    assert [o.path for o in outcomes] == paths
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    assert all((tmp_path / "out" / f"s{i}_mask.png").is_file() for i in range(10))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc")
def test_workers_die_with_the_command_even_by_kill_9(tmp_path: Path) -> None:
    """Issue 32: `kill -9` of lungseg predict left its workers running (about 157 MB each)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(40):
        write_tiff_hu(inputs / f"s{i}.tif", ct_slice(96, seed=i)[0])
    command = [sys.executable, "-m", "lungseg", "predict", str(inputs), "--quiet"]
    run = subprocess.Popen([*command, "--out", str(tmp_path / "out"), "--processes", "2"])
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(run.pid)
        time.sleep(0.1)
    assert len(workers) >= 2, "the workers never started"
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for worker in alive:  # leave nothing running, whatever the outcome
        os.kill(worker, signal.SIGKILL)
    assert not alive, "workers outlived the command"
