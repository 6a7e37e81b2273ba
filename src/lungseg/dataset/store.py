"""The built dataset on disk, and how training reads it back.

Layout of a built dataset folder::

    manifest.csv          one row per stored slice (``ManifestRow``)
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
from dataclasses import dataclass, fields
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np

from lungseg.core.labels import InfectionLabels
from lungseg.errors import DatasetError
from lungseg.imaging import Intensity


@dataclass(frozen=True)
class ManifestRow:
    """One stored slice: a row of ``manifest.csv``, typed.

    Attributes:
        slice_id: ``<case_id>#<index in the case's array>``.
        case_id: ``<source>/<image name>``.
        patient: the split unit.
        source: source folder name.
        source_file: image file or DICOM folder the slice came from.
        slice_index: slice position in its volume (from the file name or the volume
            index; empty where unknown).
        split: ``train``, ``val`` or ``test``.
        rows, cols: the slice's size.
        spacing_row_mm, spacing_col_mm: pixel size; ``None`` where the source has no geometry.
        intensity: HU or 8-bit display values.
        lung_fraction: share of the slice's pixels that are lung.
        has_sides: right and left lung are labelled apart.
        infection_labels: how the source labels infection (none, typed, binary).
        infection_fraction: share of the slice's pixels labelled infection.
        body_in_view: the whole body is in the image (a tight crop gets fewer checks).
        qc_flags: names of the quality checks the slice failed.
        use: in the training set (``False``: kept on disk but excluded by QC).
        source_split: the source's own split proposal, where it has one.
        array_file: npz path relative to the dataset folder.
        array_index: index in that file's stacks.
    """

    slice_id: str
    case_id: str
    patient: str
    source: str
    source_file: str
    slice_index: str
    split: str
    rows: int
    cols: int
    spacing_row_mm: float | None
    spacing_col_mm: float | None
    intensity: Intensity
    lung_fraction: float
    has_sides: bool
    infection_labels: InfectionLabels
    infection_fraction: float
    body_in_view: bool
    qc_flags: tuple[str, ...]
    use: bool
    source_split: str
    array_file: str
    array_index: int

    @property
    def spacing(self) -> tuple[float, float] | None:
        """``(row, col)`` pixel size in mm, where known."""
        if self.spacing_row_mm is None or self.spacing_col_mm is None:
            return None
        return (self.spacing_row_mm, self.spacing_col_mm)

    @classmethod
    def from_csv(cls, values: dict[str, str]) -> ManifestRow:
        """A row as ``csv.DictReader`` reads it."""
        try:
            return cls(
                slice_id=values["slice_id"],
                case_id=values["case_id"],
                patient=values["patient"],
                source=values["source"],
                source_file=values["source_file"],
                slice_index=values["slice_index"],
                split=values["split"],
                rows=int(values["rows"]),
                cols=int(values["cols"]),
                spacing_row_mm=_optional_float(values["spacing_row_mm"]),
                spacing_col_mm=_optional_float(values["spacing_col_mm"]),
                intensity=Intensity(values["intensity"]),
                lung_fraction=float(values["lung_fraction"]),
                has_sides=values["has_sides"] == "1",
                infection_labels=InfectionLabels(values["infection_labels"]),
                infection_fraction=float(values["infection_fraction"]),
                body_in_view=values["body_in_view"] == "1",
                qc_flags=tuple(f for f in values["qc_flags"].split(";") if f),
                use=values["use"] == "1",
                source_split=values["source_split"],
                array_file=values["array_file"],
                array_index=int(values["array_index"]),
            )
        except (KeyError, ValueError) as error:
            raise DatasetError(f"a manifest row that cannot be read ({error}): {values}") from error

    def to_csv(self) -> dict[str, str]:
        """The row as ``manifest.csv`` stores it (``from_csv``'s inverse)."""
        values: dict[str, str] = {}
        for name in MANIFEST_COLUMNS:
            value = getattr(self, name)
            if isinstance(value, bool):
                values[name] = "1" if value else "0"
            elif value is None:
                values[name] = ""
            elif isinstance(value, tuple):
                values[name] = ";".join(value)
            elif isinstance(value, Enum):
                values[name] = str(value.value)
            else:
                values[name] = str(value)
        return values


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(row.to_csv() for row in rows)


@dataclass(frozen=True)
class SliceRecord:
    """One stored slice, as training reads it."""

    row: ManifestRow
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
            self.rows = [ManifestRow.from_csv(values) for values in csv.DictReader(handle)]
        # Cases decompress once and stay cached (per dataset object, a few at a time).
        self._arrays = lru_cache(maxsize=16)(_load_npz)

    def select(
        self, split: str | None = None, *, include_flagged: bool = False
    ) -> list[ManifestRow]:
        """Manifest rows of one split (``None``: all); QC-flagged rows are left out by default."""
        return [
            row
            for row in self.rows
            if (split is None or row.split == split) and (include_flagged or row.use)
        ]

    def load(self, row: ManifestRow) -> SliceRecord:
        """The arrays of one manifest row."""
        arrays = self._arrays(self.folder / row.array_file)
        index = row.array_index
        return SliceRecord(
            row=row,
            image=arrays["image"][index],
            intensity=row.intensity,
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
