"""The built dataset on disk, and how training reads it back.

Layout of a built dataset folder::

    manifest.csv          one row per stored slice (see ``MANIFEST_COLUMNS``)
    qc.csv                every slice a quality check flagged, with its measures
    build_config.json     the configuration that built it (and lungseg's version)
    cases/<source>/<case>.npz   image, lung, infection stacks (slices, rows, cols)
    report/report.md      the dataset report with its pictures

Arrays are stored losslessly (``np.savez_compressed``): images as int16 HU or
uint8 display values, as the source had them; the manifest says which.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lungseg.errors import DatasetError
from lungseg.imaging import Intensity

MANIFEST_COLUMNS = (
    "slice_id",  # <case_id>#<index in the case's array>
    "case_id",  # <source>/<image name>
    "patient",  # the split unit
    "source",  # source folder name
    "source_file",  # image file or DICOM folder the slice came from
    "slice_index",  # slice position in its volume (file name or volume index)
    "split",  # train / val / test
    "rows",
    "cols",
    "spacing_row_mm",  # empty where the source has no geometry
    "spacing_col_mm",
    "intensity",  # hu / display
    "lung_fraction",  # share of the slice's pixels that are lung
    "has_sides",  # 1 where right/left lungs are labelled apart
    "infection_labels",  # none / typed / binary
    "infection_fraction",  # share of the slice's pixels labelled infection
    "body_in_view",  # 1 = whole body in the image, 0 = tight crop (fewer checks apply)
    "qc_flags",  # ';'-joined names of failed quality checks
    "use",  # 1 = in the training set, 0 = kept on disk but excluded (QC)
    "source_split",  # the source's own split proposal, where it has one
    "array_file",  # npz path relative to the dataset folder
    "array_index",  # index in that file's stacks
)


def write_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


@dataclass(frozen=True)
class SliceRecord:
    """One stored slice, as training reads it."""

    row: dict[str, str]
    image: np.ndarray  # (rows, cols) int16 HU or uint8 display
    intensity: Intensity
    lung: np.ndarray  # (rows, cols) uint8 lung labels
    infection: np.ndarray  # (rows, cols) uint8 infection labels


class BuiltDataset:
    """Read access to a folder made by ``lungseg dataset build``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "manifest.csv"
        if not manifest.is_file():
            raise DatasetError(f"{self.folder}: not a built dataset (no manifest.csv)")
        with manifest.open(newline="") as handle:
            self.rows: list[dict[str, str]] = list(csv.DictReader(handle))
        # Cases decompress once and stay cached (per dataset object, a few at a time).
        self._arrays = lru_cache(maxsize=16)(_load_npz)

    def select(
        self, split: str | None = None, *, include_flagged: bool = False
    ) -> list[dict[str, str]]:
        """Manifest rows of one split (``None``: all); QC-flagged rows are left out by default."""
        return [
            row
            for row in self.rows
            if (split is None or row["split"] == split) and (include_flagged or row["use"] == "1")
        ]

    def load(self, row: dict[str, str]) -> SliceRecord:
        """The arrays of one manifest row."""
        arrays = self._arrays(self.folder / row["array_file"])
        index = int(row["array_index"])
        return SliceRecord(
            row=row,
            image=arrays["image"][index],
            intensity=Intensity(row["intensity"]),
            lung=arrays["lung"][index],
            infection=arrays["infection"][index],
        )

    def iter_split(
        self, split: str | None = None, *, include_flagged: bool = False
    ) -> Iterator[SliceRecord]:
        for row in self.select(split, include_flagged=include_flagged):
            yield self.load(row)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
