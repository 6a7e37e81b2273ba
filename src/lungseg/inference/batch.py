"""Many inputs, one runner: ``lungseg predict``'s list, its worker processes and the
cohort's Dask workers all take one ``BatchSettings`` and do the same unit of work on
each input (``segment_and_write``: read, segment, write aside-then-rename), giving an
``Outcome`` whose ``summary`` is the one description of a prediction
(``inference.result.Summary``) that ``--json``, the API and the cohort CSV show.

    settings = BatchSettings(out=Path("results"))
    inputs, skipped = expand_inputs([Path("folder/")])
    for outcome in run_batch(settings, inputs):
        print(outcome.summary(model).model_dump_json())

In this process, two slices are read and segmented at once (``picture_lanes``) and
writing (PNG and NIfTI compression, which leave the GIL) runs on a thread of its own;
a long list of 2D pictures may go to worker processes instead (``processes``), each
with its own Predictor; a cohort of scans goes to a Dask cluster
(``inference.cohort``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.core.files import strip_suffixes
from lungseg.core.memory import keep_freed_memory
from lungseg.errors import LungsegError
from lungseg.imaging.readers import DEFAULT_LIMITS, RASTER_SUFFIXES, ReadLimits
from lungseg.inference.encode import STATISTICS, write_prediction, write_statistics
from lungseg.inference.model import Progress
from lungseg.inference.predictor import Predictor
from lungseg.inference.result import Failure, ModelInfo, Prediction, Summary, describe

PARALLEL_MIN_PICTURES = 64
"""A list of at least this many 2D pictures is segmented by worker processes by default
where there are more cores than ``LANES``; a worker takes about a second to start."""
SCAN_SUFFIXES = (".nii", ".nii.gz", ".zip")
"""Files read as they are: NIfTI volumes and zips of a DICOM series."""


@dataclass(frozen=True)
class BatchSettings:
    """What every way of running many inputs needs, the same for all of them.

    Attributes:
        out: the folder the files go to.
        model, infection: the Predictor's network and whether it gives infection
            (``Predictor``).
        limits: the reader's size limits.
        threads: onnxruntime threads per Predictor (0: all cores; worker processes and
            Dask workers take 1 each, as they run side by side).
    """

    out: Path
    model: str | None = None
    infection: bool = True
    limits: ReadLimits = DEFAULT_LIMITS
    threads: int = 0

    def predictor(self, threads: int | None = None) -> Predictor:
        keep_freed_memory()  # in worker processes too (core.memory)
        return Predictor(
            self.model,
            infection=self.infection,
            threads=self.threads if threads is None else threads,
        )


@dataclass
class Outcome:
    """One input: its prediction and files, or why it failed."""

    path: Path
    stem: str
    prediction: Prediction | None = None
    written: list[Path] = field(default_factory=list)
    error: str | None = None

    def summary(self, model: ModelInfo) -> Summary | Failure:
        """The one description of this input's answer (or its failure)."""
        if self.prediction is None:
            return Failure(file=str(self.path), error=str(self.error))
        return describe(
            self.prediction,
            model=model,
            file=str(self.path),
            outputs=[str(p) for p in self.written],
        )


def segment(
    predictor: Predictor, path: Path, stem: str, limits: ReadLimits, progress: Progress | None
) -> Outcome:
    """Read and segment one input; a bad input's outcome says why, and so does a bug's
    (with the exception's type), so the others go on."""
    outcome = Outcome(path, stem)
    try:
        outcome.prediction = predictor.predict(path, limits=limits, progress=progress)
    except LungsegError as error:
        outcome.error = str(error)
    except Exception as error:  # a bug: report it on this input's line, go on
        outcome.error = (
            f"{path}: unexpected error {type(error).__name__}: {error} "
            "(a bug in lungseg: please report it with this line)"
        )
    return outcome


def write(outcome: Outcome, out: Path, model: ModelInfo) -> Outcome:
    """Write a segmented input's files, and last ``<stem>_statistics.json``: the summary
    ``--json`` prints (``result.Summary``, its files listed), so a batch leaves its
    numbers next to its masks. A refused input gets no file; a full disk or an
    unwritable folder is the input's error."""
    if outcome.prediction is not None:
        try:
            written = write_prediction(outcome.prediction, out, outcome.stem)
            if written:
                statistics = out / f"{outcome.stem}{STATISTICS}"
                outcome.written = [*written, statistics]
                summary = outcome.summary(model)
                assert isinstance(summary, Summary)  # a prediction: not a failure
                write_statistics(statistics, summary)
        except OSError as error:
            outcome.error = f"{outcome.path}: cannot write the outputs: {error}"
    return outcome


def segment_and_write(
    predictor: Predictor, path: Path, stem: str, settings: BatchSettings
) -> Outcome:
    """The unit of work of every runner: read, segment, write."""
    outcome = segment(predictor, path, stem, settings.limits, None)
    return write(outcome, settings.out, predictor.model_info())


def run_batch(
    settings: BatchSettings,
    paths: list[Path],
    stems: list[str] | None = None,
    *,
    predictor: Predictor | None = None,
    processes: int = 0,
    progress: Callable[[Path], Progress | None] | None = None,
) -> Iterator[Outcome]:
    """Segment each input and write its files (named ``stems``, by default
    ``unique_stems``); outcomes in input order. ``processes``: worker processes (for 2D
    pictures; ``process_workers`` picks), 0 for this process with ``predictor``
    (``settings.predictor()`` by default), segmenting ``picture_lanes`` inputs at once
    while the one before is written. ``progress(path)`` gives the callback that follows
    that input's slices (this process only)."""
    if stems is None:
        stems = unique_stems(paths)[0]
    if processes:
        yield from _in_processes(settings, paths, stems, processes)
        return
    predictor = predictor or settings.predictor()
    model = predictor.model_info()
    lanes = picture_lanes(paths)
    with ThreadPoolExecutor(1, thread_name_prefix="lungseg-write") as writer:
        if lanes == 1:  # scans: read and segmented here, so Ctrl+C and SIGTERM stop them
            written: Future[Outcome] | None = None
            for path, stem in zip(paths, stems, strict=True):
                follow = progress(path) if progress is not None else None
                outcome = segment(predictor, path, stem, settings.limits, follow)
                if written is not None:
                    yield written.result()
                written = writer.submit(write, outcome, settings.out, model)
            if written is not None:
                yield written.result()
            return
        with ThreadPoolExecutor(lanes, thread_name_prefix="lungseg-segment") as segmenters:
            pending: deque[Future[Outcome]] = deque()
            for path, stem in zip(paths, stems, strict=True):
                follow = progress(path) if progress is not None else None
                segmented = segmenters.submit(
                    segment, predictor, path, stem, settings.limits, follow
                )
                pending.append(writer.submit(_write_when_segmented, segmented, settings.out, model))
                while len(pending) > lanes:  # one being written, ``lanes`` being segmented
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def _write_when_segmented(segmented: Future[Outcome], out: Path, model: ModelInfo) -> Outcome:
    return write(segmented.result(), out, model)


LANES = 2
"""2D inputs segmented side by side in this process (threads sharing one Predictor):
onnxruntime's two threads leave part of the second core idle during a network pass,
and the work around the network mostly leaves the GIL (``benchmarks/overhead.py``)."""


def picture_lanes(paths: list[Path]) -> int:
    """How many inputs this process segments at once: ``LANES`` for a list of single
    files that are not scans (pictures and DICOM files: a slice each, small in memory),
    one where scans are among them (each may fill memory alone), one on one core."""
    single_files = len(paths) > 1 and all(
        p.is_file() and not p.name.lower().endswith(SCAN_SUFFIXES) for p in paths
    )
    cores = os.cpu_count() or 1
    return min(LANES, cores) if single_files and cores > 1 else 1


def process_workers(paths: list[Path], requested: int | None = None) -> int:
    """Worker processes for a list of inputs: for 2D pictures only (PNG, JPG, TIFF, BMP
    files; scans run one at a time, in bounded memory), ``requested`` of them. By
    default one per core from ``PARALLEL_MIN_PICTURES`` pictures on where there are
    more cores than this process's ``LANES`` use; on two cores this process, two slices
    at a time, is faster without the workers' start (the 267 finding-lungs slices from
    the command line: 45.6 ms a slice in this process, 53.4 ms with two workers,
    ``benchmarks/inference_speed.py``); 0: this process segments them."""
    pictures = len(paths) > 1 and all(
        p.is_file() and p.suffix.lower() in RASTER_SUFFIXES for p in paths
    )
    if not pictures:
        return 0
    if requested is not None:
        return max(requested, 0)
    cores = os.cpu_count() or 1
    return cores if cores > LANES and len(paths) >= PARALLEL_MIN_PICTURES else 0


def _in_processes(
    settings: BatchSettings, paths: list[Path], stems: list[str], workers: int
) -> Iterator[Outcome]:
    """``workers`` processes, each with its own Predictor (one onnxruntime thread), doing
    ``segment_and_write`` on whole inputs, outcomes in input order. At most two inputs
    per worker are under way or waiting to be taken, so memory stays bounded however
    long the list. A worker that dies (killed, out of memory) takes only the input that
    killed it: the inputs under way then are each run again alone, the one that kills
    its worker again fails with the reason, and the rest of the list goes on in a new
    pool. Workers die with this process (``_start_worker``)."""
    position = 0
    while position < len(paths):
        with _pool(settings, workers) as pool:
            window: deque[tuple[int, Future[Outcome]]] = deque()
            try:
                while position < len(paths) or window:
                    while position < len(paths) and len(window) < 2 * workers:
                        window.append(
                            (position, pool.submit(_worker_does, paths[position], stems[position]))
                        )
                        position += 1
                    outcome = window[0][1].result()
                    window.popleft()
                    yield outcome
            except BrokenProcessPool:
                suspects = [index for index, _ in window]
                for _, future in window:
                    future.cancel()
            else:
                return
        for index in suspects:  # each alone, in order: the one that kills its worker fails
            yield _alone(settings, paths[index], stems[index])


def _pool(settings: BatchSettings, workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # no fork of onnxruntime's threads
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(settings, os.getpid())
    )


def _alone(settings: BatchSettings, path: Path, stem: str) -> Outcome:
    """One input in a worker of its own (after a worker died with it under way)."""
    with _pool(settings, 1) as pool:
        try:
            return pool.submit(_worker_does, path, stem).result()
        except BrokenProcessPool:
            return Outcome(
                path,
                stem,
                error=f"{path}: its worker process stopped (killed, or out of memory?) while "
                "segmenting it",
            )


_worker: tuple[Predictor, BatchSettings] | None = None
"""The worker process's own Predictor and settings (``_in_processes``)."""
PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h


def _start_worker(settings: BatchSettings, parent: int) -> None:
    global _worker
    _die_with(parent)
    _worker = (settings.predictor(threads=1), settings)


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when the process that started it dies, even by
    ``kill -9`` (Linux; elsewhere the workers end when their queue closes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _worker_does(path: Path, stem: str) -> Outcome:
    assert _worker is not None, "the worker's initializer loads the Predictor"
    return segment_and_write(_worker[0], path, stem, _worker[1])


def expand_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The inputs as the CLI takes them, and a line for each file a folder holds that is
    not read (why). Files (a ``.zip`` of a series included) are read as they are. A
    folder holding only DICOM files (and files that are no image: a DICOMDIR, a README)
    is one DICOM series. A folder holding pictures (PNG, JPG, TIFF, BMP), NIfTI volumes
    or zips stands for each of them; its DICOM files are then one more input: a lone one
    is one slice, several are the folder's series."""
    expanded: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        files = sorted(p for p in path.iterdir() if p.is_file())
        images = [p for p in files if _image_kind(p)]  # by name: no file is opened
        if not images:  # a DICOM series (its files may lie in sub-folders)
            expanded.append(path)
            continue
        expanded.extend(images)
        rest = [p for p in files if not _image_kind(p)]
        dicoms = [p for p in rest if _looks_dicom(p)]
        if len(dicoms) == 1:
            expanded.append(dicoms[0])
        elif dicoms:
            expanded.append(path)  # the reader takes the folder's DICOM files as a series
        for other in sorted(set(rest) - set(dicoms)):
            suffix = "".join(other.suffixes[-2:]) or "no suffix"
            skipped.append(f"{other}: skipped, not an image lungseg reads ({suffix})")
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            skipped.append(f"{folder}: skipped, a folder inside a folder of pictures")
    return expanded, skipped


def _image_kind(path: Path) -> bool:
    name = path.name.lower()
    return path.suffix.lower() in RASTER_SUFFIXES or name.endswith(SCAN_SUFFIXES)


def _looks_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:  # unreadable: the reader will say so
        return False


def output_stem(path: Path) -> str:
    """``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name."""
    stem = strip_suffixes(path.name)
    if stem != path.name:
        return stem
    return path.stem if path.is_file() else path.name


def unique_stems(paths: list[Path]) -> tuple[list[str], list[str]]:
    """An output stem per input, never shared, so no input's files overwrite another's.

    Inputs whose stems collide (``a/1.png`` + ``b/1.png``, ``x.png`` + ``x.dcm``; compared
    case-insensitively) get their folder name (or, in one folder, their file type)
    in front, then a number if still needed. Returns the stems and one note per
    renamed group, saying how.
    """
    stems = [output_stem(p) for p in paths]
    groups: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        groups.setdefault(stem.lower(), []).append(index)
    notes = []
    for members in (m for m in groups.values() if len(m) > 1):
        parents = {paths[i].parent.name for i in members}
        for i in members:
            qualifier = paths[i].parent.name if len(parents) == len(members) else None
            if qualifier is None:
                qualifier = paths[i].name[len(stems[i]) :].lstrip(".").lower() or "folder"
            stems[i] = f"{qualifier}_{stems[i]}"
        notes.append(
            "inputs "
            + ", ".join(str(paths[i]) for i in members)
            + " share a name; their outputs are named "
            + ", ".join(f"{stems[i]}_*" for i in members)
        )
    taken: set[str] = set()
    for index, stem in enumerate(stems):
        candidate, number = stem, 2
        while candidate.lower() in taken:
            candidate, number = f"{stem}-{number}", number + 1
        if candidate != stem:
            notes.append(f"{paths[index]}: outputs named {candidate}_* (the name was taken)")
        stems[index] = candidate
        taken.add(candidate.lower())
    return stems, notes
