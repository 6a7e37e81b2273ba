"""Cohorts: many scans segmented on a Dask cluster, one summary CSV, resumable.

``lungseg predict --cohort`` hands each scan to a Dask worker, which loads the models
once (per worker process), segments the scan, writes its files and returns one
summary row; the rows are appended to ``cohort.csv`` as scans finish. A scan whose
row says ``ok`` and whose files are all there is skipped when the command runs
again, so an interrupted cohort goes on where it stopped (failed scans are tried
again).

Why Dask: the work is a plain map of a Python function over files, CPU-bound, with
numpy arrays and no shared state; ``dask.distributed`` runs exactly that, locally
(``LocalCluster``: one process per worker) or on an existing cluster (``--scheduler
tcp://host:8786``; ``dask-jobqueue`` and ``dask-kubernetes`` start one on SLURM/PBS or
Kubernetes), with per-task retries and a dashboard. Ray would serve too, but brings
an object store and actor model this job does not need.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lungseg.core.scratch import make_folder
from lungseg.errors import LungsegError
from lungseg.inference.batch import BatchSettings, segment_and_write, unique_stems
from lungseg.inference.predictor import Predictor
from lungseg.inference.result import Failure, Summary

SUMMARY = "cohort.csv"
COLUMNS = (
    "input",
    "stem",
    "status",
    "error",
    "kind",
    "slices",
    "right_ml",
    "left_ml",
    "total_ml",
    "involved_right_pct",
    "involved_left_pct",
    "severity_right",
    "severity_left",
    "severity_total",
    "ground_glass_ml",
    "consolidation_ml",
    "effusion_ml",
    "seconds",
    "check_status",
    "check_reasons",
    "notes",
    "outputs",
)
SCAN_SUFFIXES = (".nii", ".nii.gz", ".zip", ".dcm")


def cohort_inputs(sources: list[Path]) -> list[Path]:
    """The scans of a cohort, in order: a ``.csv`` lists them (a ``path`` column, relative
    to the CSV's folder), a folder holds them (its NIfTI files, zips and DICOM series
    sub-folders, by name), any other path is one scan."""
    scans: list[Path] = []
    for source in sources:
        if "\0" in str(source):
            raise LungsegError(f"a path with a NUL byte: {str(source)!r}")
        if source.suffix.lower() == ".csv":
            scans.extend(_listed(source))
        elif source.is_dir() and _holds_scans(source):
            scans.extend(
                sorted(
                    p
                    for p in source.iterdir()
                    if not p.name.startswith(".")
                    and (p.is_dir() or p.name.lower().endswith(SCAN_SUFFIXES))
                )
            )
        else:
            scans.append(source)
    if not scans:
        raise LungsegError("the cohort holds no scan")
    return scans


def _listed(table: Path) -> list[Path]:
    try:  # utf-8-sig: a list saved by Excel starts with a byte-order mark
        with table.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LungsegError(f"{table}: cannot read the list of scans: {error}") from error
    if not rows or "path" not in rows[0]:
        raise LungsegError(f"{table}: a cohort list needs a 'path' column")
    paths = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        text = (row["path"] or "").strip()
        if not text:
            continue
        if "\0" in text:
            raise LungsegError(f"{table}, line {number}: a path with a NUL byte: {text!r}")
        paths.append(Path(text) if Path(text).is_absolute() else (table.parent / text).resolve())
    return paths


def _holds_scans(folder: Path) -> bool:
    """A folder of scans (not itself one DICOM series): it has sub-folders or NIfTI/zip files."""
    return any(
        p.is_dir() or p.name.lower().endswith((".nii", ".nii.gz", ".zip"))
        for p in folder.iterdir()
        if not p.name.startswith(".")
    )


@functools.lru_cache(maxsize=2)
def _predictor(settings: BatchSettings) -> Predictor:
    """One Predictor per worker process (the models load once, not per scan), with one
    onnxruntime thread: the cluster runs one scan per worker process at a time."""
    return settings.predictor(threads=1)


def segment_one(path: str, stem: str, settings: BatchSettings) -> dict[str, str]:
    """Segment one scan and write its files, as every runner does
    (``batch.segment_and_write``); its row of ``cohort.csv``. Runs on a Dask worker."""
    try:
        predictor = _predictor(settings)
    except LungsegError as error:
        return cohort_row(Failure(file=path, error=str(error)), stem)
    outcome = segment_and_write(predictor, Path(path), stem, settings)
    return cohort_row(outcome.summary(predictor.model_info()), stem)


def cohort_row(summary: Summary | Failure, stem: str) -> dict[str, str]:
    """A row of ``cohort.csv``: the one summary of an answer (``result.Summary``, as
    ``--json`` and the API give it), flattened; ``status`` ok or failed."""
    row = {name: "" for name in COLUMNS} | {"input": summary.file or "", "stem": stem}
    if isinstance(summary, Failure):
        return row | {"status": "failed", "error": summary.error}
    lung = summary.lung
    notes = list(summary.notes)
    in_ml = lung.unit == "mL"
    if not in_ml:  # a column holds one unit: mL, or nothing, and the row says why
        why = (
            "a slice has areas, not volumes"
            if summary.kind == "slice"
            else "the file gives no voxel size"
        )
        notes.append(
            f"no volumes in mL: {why} (lungs {lung.total:.1f} {lung.unit}, right "
            f"{lung.right:.1f}, left {lung.left:.1f})"
        )
    row |= {
        "status": "ok",
        "kind": summary.kind,
        "slices": str(summary.size[0] if summary.kind == "volume" else 1),
        "right_ml": f"{lung.right:.1f}" if in_ml else "",
        "left_ml": f"{lung.left:.1f}" if in_ml else "",
        "total_ml": f"{lung.total:.1f}" if in_ml else "",
        "seconds": f"{summary.timings_ms.segment / 1000:.2f}",
        "check_status": summary.check.status,  # ok / review / refused (no files)
        "check_reasons": " | ".join(summary.check.reasons),
        "notes": " | ".join(notes),
        "outputs": json.dumps([Path(p).name for p in summary.outputs or []]),
    }
    involvement = summary.involvement
    if involvement is not None:
        share, severity = involvement.share, involvement.severity
        row |= {
            "involved_right_pct": f"{100 * share.right:.2f}",
            "involved_left_pct": f"{100 * share.left:.2f}",
            "severity_right": str(severity.right),
            "severity_left": str(severity.left),
            "severity_total": str(severity.total),
        }
        for name in ("ground_glass_ml", "consolidation_ml", "effusion_ml"):
            value = getattr(involvement, name)
            row[name] = "" if value is None else f"{value:.1f}"
    return row


def finished(out: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier run that need no repeat: ``ok``, with all their files there."""
    summary = out / SUMMARY
    if not summary.is_file():
        return {}
    with summary.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    done = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        try:
            outputs = json.loads(row.get("outputs") or "[]")
        except json.JSONDecodeError:
            continue
        if outputs and all((out / name).is_file() for name in outputs):
            done[row["input"]] = row
    return done


def run_cohort(
    scans: list[Path],
    settings: BatchSettings,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_row: Callable[[dict[str, str], int, int], None] | None = None,
    work: Callable[[str, str, BatchSettings], dict[str, str]] = segment_one,
) -> Path:
    """Segment ``scans`` on a Dask cluster (``scheduler``'s, or a local one of
    ``workers`` processes) and write ``cohort.csv`` in ``settings.out``: the rows of
    earlier runs that are done, then each new row as its scan finishes.
    ``on_row(row, done, total)`` follows the progress; ``work`` is what a worker does
    with one scan (``segment_one``; an importable function). A scan whose task fails,
    or kills its worker each time it is tried, gets a failed row. Returns the summary's
    path."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    with _only_run(out):
        return _run_locked(scans, settings, out, scheduler, workers, on_row, work)


LOCK = ".cohort.lock"


@contextmanager
def _only_run(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the run: a second cohort into the same folder is refused
    (its rows would interleave with this one's and be lost when it rewrites the CSV).
    The lock goes with the process, so a killed run leaves nothing that blocks the next."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are not guarded there
        yield
        return
    with (out / LOCK).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LungsegError(
                f"another lungseg predict --cohort writes to {out} ({holder}); wait for it "
                "to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(
    scans: list[Path],
    settings: BatchSettings,
    out: Path,
    scheduler: str | None,
    workers: int,
    on_row: Callable[[dict[str, str], int, int], None] | None,
    work: Callable[[str, str, BatchSettings], dict[str, str]],
) -> Path:
    from dask.distributed import Client, LocalCluster, as_completed

    stems, _notes = unique_stems(scans)
    done = finished(out)
    todo = [(str(p), s) for p, s in zip(scans, stems, strict=True) if str(p) not in done]
    summary = out / SUMMARY
    partial = out / f".{SUMMARY}.partial"
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in done.values())
    os.replace(partial, summary)  # earlier rows kept; new ones appended below
    total, count = len(scans), len(done)
    if not todo:
        return summary
    with _client(Client, LocalCluster, scheduler, workers) as client:
        futures = {
            client.submit(work, path, stem, settings, pure=False): (path, stem)
            for path, stem in todo
        }
        retried: set[str] = set()
        with summary.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            finishing = as_completed(futures)
            for future in finishing:
                path, stem = futures[future]
                if _killed(future) and path not in retried:
                    # a worker that died took the scans it held: each is tried once more
                    # (the scan that killed it dies again, alone, and fails then)
                    retried.add(path)
                    again = client.submit(work, path, stem, settings, pure=False)
                    futures[again] = (path, stem)
                    finishing.add(again)
                    continue
                row = _row_of(future, path, stem)
                writer.writerow(row)
                handle.flush()
                count += 1
                if on_row is not None:
                    on_row(row, count, total)
    return summary


def _killed(future: Any) -> bool:
    """Whether Dask gave up on the task because workers died running it."""
    error = future.exception() if future.status == "error" else None
    return type(error).__name__ == "KilledWorker"


def _row_of(future: Any, path: str, stem: str) -> dict[str, str]:
    """A scan's row; a failed one, with the reason, where its task died with its worker
    (Dask gives up after the scan killed a worker several times: ``KilledWorker``) or
    raised, so that one scan never aborts the cohort (nor every run after it)."""
    try:
        row: dict[str, str] = future.result()
    except Exception as error:  # the task's own failure, reported on its row
        reason = (
            "its worker process died while segmenting it, each time it was tried (out of memory?)"
            if _killed(future)
            else f"unexpected error {type(error).__name__}: {error}"
        )
        return cohort_row(Failure(file=path, error=f"{path}: {reason}"), stem)
    return row


def _client(client: Any, cluster: Any, scheduler: str | None, workers: int) -> Any:
    if scheduler:
        return client(scheduler)
    import dask

    scratch = make_folder("dask")  # the cluster's own, removed after (swept if killed)
    setting = dask.config.set(
        {
            "temporary-directory": str(scratch),  # locks too: no /tmp/dask-*
            # one scan per worker thread at a time: a worker that dies takes no other scan
            "distributed.scheduler.worker-saturation": 1.0,
        }
    )
    local = cluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        local_directory=str(scratch),
        silence_logs=40,  # errors only: the rows say what happened
    )
    return _Owned(client(local), local, scratch, setting)


class _Owned:
    """A client and the local cluster it owns, closed together, the workers' scratch
    folder removed."""

    def __init__(self, client: Any, cluster: Any, scratch: Path, setting: Any) -> None:
        self.client, self.cluster, self.scratch, self.setting = client, cluster, scratch, setting

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        try:
            self.client.close()
            self.cluster.close()
        finally:
            self.setting.__exit__(None, None, None)  # dask's own temporary folder again
            shutil.rmtree(self.scratch, ignore_errors=True)
