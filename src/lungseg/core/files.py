"""File helpers every stage shares: checksums, image-file stems, and unpacking a zip
with limits (count and unpacked size are checked before anything is written)."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CHUNK = 1 << 20
HEAD_BYTES = 132
"""The start of a zip member that ``unzip_flat``'s ``wanted`` looks at (a DICOM file's
preamble and its "DICM")."""


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def strip_suffixes(name: str) -> str:
    """A file name without its image extension (``a.nii.gz`` -> ``a``, any case)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


class UnzipStopped(Exception):
    """``unzip_flat``'s ``stop`` said to stop."""


class ZipTooLarge(Exception):
    """A zip over one of ``unzip_flat``'s limits; ``limit`` names which."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def unzip_flat(
    archive: Path,
    folder: Path,
    name_of: Callable[[int, zipfile.ZipInfo], str | None],
    *,
    max_files: int,
    max_bytes: float,
    wanted: Callable[[bytes], bool] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[Path]:
    """Unpack a zip's files into ``folder``, flat: member paths are never used as paths;
    ``name_of(index, member)`` names each file (``None`` skips it); ``wanted(head)``,
    given a member's first ``HEAD_BYTES``, skips the members it refuses before anything
    of them is written; ``stop()``, asked before each member, ends the unpacking
    (``UnzipStopped``). Each member is read up to its declared size only. Returns the
    files written.

    Raises:
        ZipTooLarge: more than ``max_files`` files, or more than ``max_bytes`` unpacked.
        zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError: a
            corrupt, truncated, encrypted zip, or an unsupported compression method.
    """
    with zipfile.ZipFile(archive) as bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        if len(members) > max_files:
            raise ZipTooLarge(
                f"the zip holds {len(members)} files, more than the limit of {max_files}",
                "max_files",
            )
        if sum(m.file_size for m in members) > max_bytes:
            raise ZipTooLarge(
                f"the zip unpacks to more than {max_bytes / 1024**3:g} GB", "max_unzipped_gb"
            )
        written: list[Path] = []
        for index, member in enumerate(members):
            if stop is not None and stop():  # asked between members: the caller left
                raise UnzipStopped(f"unpacking stopped after {len(written)} files")
            name = name_of(index, member)
            if name is None:
                continue
            with bundle.open(member) as source:
                head = source.read(HEAD_BYTES)
                if wanted is not None and not wanted(head):
                    continue
                with (folder / name).open("wb") as sink:
                    sink.write(head)
                    shutil.copyfileobj(source, sink)
            written.append(folder / name)
    return written
