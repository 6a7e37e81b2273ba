"""Temporary folders that never outlive their process: named with its id, removed when
done, on SIGTERM and Ctrl+C (``lungseg.cli`` turns SIGTERM into an interruption), and
swept at the next start when a process died without removing them (``kill -9``, the
OOM killer). They hold patient data: an unzipped series, an upload.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "lungseg-"
KINDS = ("zip", "upload", "dask")
"""What lungseg keeps in its temporary folders: an unzipped DICOM series, an upload to
the server, a local Dask cluster's scratch."""


def make_folder(kind: str) -> Path:
    """A private (0700) temporary folder ``lungseg-<kind>-<pid>-<random>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}")
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))


@contextmanager
def scratch_folder(kind: str) -> Iterator[Path]:
    """``make_folder``, removed when the block ends, however it ends."""
    folder = make_folder(kind)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders in the temporary folder (or ``root``) of processes that
    no longer run; those of running ones (another server, another ``lungseg predict``)
    stay."""
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for kind in KINDS:
        for folder in root.glob(f"{PREFIX}{kind}-*"):
            pid = folder.name[len(f"{PREFIX}{kind}-") :].split("-", 1)[0]
            if folder.is_dir() and (not pid.isdigit() or not process_running(int(pid))):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return sorted(removed)


def process_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (for sweeping what a dead one left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a process id at all
        return False
    return True
