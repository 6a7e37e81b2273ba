"""Download the public COVID-19-CT-Seg dataset (Zenodo record 3757476).

20 CT volumes with lung and infection masks (Ma et al., doi 10.5281/zenodo.3757476).
Downloads resume where they stopped (HTTP Range), retry dropped connections,
check each file's SHA-256 and unpack into the layout ``dataset build`` reads.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lungseg.core.files import ZipTooLarge, sha256_of, unzip_flat
from lungseg.errors import DownloadError

ZENODO_BASE_URL = "https://zenodo.org/records/3757476/files/"


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name under the base URL and its SHA-256."""

    name: str
    sha256: str


COVID19_CT_SEG_FILES = (
    RemoteFile(
        "COVID-19-CT-Seg_20cases.zip",
        "a5060480eff9315b069b086312dac4872777901fb80d268a5a83edd9f4e7b440",
    ),
    RemoteFile("Lung_Mask.zip", "f060b0d0299939a6d95ddefdbfa281de1a779c4d230a5adbd32414711d6d8187"),
    RemoteFile(
        "Infection_Mask.zip", "87901c73fdd2230260e61d2dbc57bf56026efc28264006b8ea2bf411453c1694"
    ),
    RemoteFile(
        "Lung_and_Infection_Mask.zip",
        "34f5a573cb8fb53cb15abe81868395d9addf436854826a6fd6e70c2b294f19c3",
    ),
)
DATASETS = {"covid19-ct-seg": COVID19_CT_SEG_FILES}
CHUNK = 1 << 20


def fetch(url: str, target: Path, sha256: str, *, retries: int = 5, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target``, resuming a ``target.part`` left by an earlier try.

    The file appears under its final name only once its SHA-256 matches; a
    mismatch deletes the partial file (it cannot be resumed) and raises.

    Raises:
        DownloadError: the server kept failing, or the checksum is wrong.
    """
    if target.exists() and sha256_of(target) == sha256:
        return target
    part = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, ConnectionError) as error:
            last_error = error
            if (
                isinstance(error, urllib.error.HTTPError)
                and 400 <= error.code < 500
                and error.code != 416
            ):
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
            time.sleep(min(2.0**attempt * 0.1, 5.0))
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} tries: {last_error}")
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise DownloadError(
            f"{url}: checksum mismatch (expected sha256 {sha256}, got {actual}); deleted"
        )
    part.rename(target)
    return target


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # already complete
            return
        raise
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            part.open("ab" if resumed else "wb") as handle,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[:-5]) as bar,
        ):
            received = 0
            while block := response.read(CHUNK):
                handle.write(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < int(length):
            raise ConnectionError(f"connection dropped after {have + received} of {total} bytes")


MAX_FILES = 10_000
MAX_UNPACKED_BYTES = 64 * 1024**3
"""A public dataset zip beyond these is refused (the COVID-19-CT-Seg zips hold 20
volumes, a few GB unpacked)."""


def _public_name(_index: int, member: zipfile.ZipInfo) -> str | None:
    """A member's own file name; folders, hidden files and macOS resource forks are skipped."""
    name = Path(member.filename).name
    if not name or name.startswith(".") or "__MACOSX" in member.filename:
        return None
    return name


def unpack(archive: Path, folder: Path) -> Path:
    """Unzip ``archive`` into ``folder/<archive stem>`` (written aside, then renamed).

    Files are placed flat (folders inside the zip are dropped): the public zips
    hold one level of ``.nii.gz`` files, sometimes under a folder of their own.
    """
    target = folder / archive.stem
    if target.is_dir():
        return target
    work = folder / f".{archive.stem}.unpacking"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        unzip_flat(archive, work, _public_name, max_files=MAX_FILES, max_bytes=MAX_UNPACKED_BYTES)
        work.rename(target)
    except (zipfile.BadZipFile, zlib.error, EOFError, ZipTooLarge, OSError) as error:
        shutil.rmtree(work, ignore_errors=True)
        raise DownloadError(f"{archive}: cannot unpack: {error}") from error
    return target


def download_dataset(
    name: str,
    out: str | Path,
    *,
    base_url: str = ZENODO_BASE_URL,
    files: tuple[RemoteFile, ...] | None = None,
) -> Path:
    """Download and unpack a public dataset into ``out``; returns the folder to build from.

    Args:
        name: dataset name, one of ``DATASETS``.
        out: folder for the archives and the unpacked files.
        base_url: where the files lie (the Zenodo record by default; a mirror works).
        files: the files and checksums (defaults to the dataset's own list).
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    out = Path(out)
    archives = out / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for remote in files or DATASETS[name]:
        archive = fetch(base + remote.name, archives / remote.name, remote.sha256)
        unpack(archive, out)
    return out
