"""The error types lungseg raises on bad input."""

from __future__ import annotations

from pathlib import Path


class LungsegError(Exception):
    """Base class of every error lungseg raises on purpose."""


class ImageReadError(LungsegError, ValueError):
    """A file could not be read as CT (corrupt, truncated, unknown type, wrong shape...).

    The message always starts with the file's path, then says what is wrong.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TooLargeError(ImageReadError):
    """A file declares more than a reading limit allows (``imaging.readers.ReadLimits``);
    refused before anything of that size is allocated. The web API answers 413."""

    def __init__(self, path: str | Path, problem: str, limit: str) -> None:
        super().__init__(path, problem)
        self.limit = limit


class DatasetError(LungsegError, ValueError):
    """A dataset source or a built dataset is not usable as asked."""


class DownloadError(LungsegError):
    """A download failed (network, checksum) after its retries."""
