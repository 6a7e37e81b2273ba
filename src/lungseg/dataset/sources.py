"""Dataset sources: the folder layouts lungseg builds training sets from.

A source finds its cases (``CaseFile``: one image file or DICOM series with its
masks) and says which patient each belongs to, so that the split never puts one
patient in two splits. Sources are looked up by name in ``SOURCES``; ``open_source``
picks the one whose layout a folder has.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungseg.core.files import strip_suffixes
from lungseg.core.labels import InfectionLabels, infection_labels, sided_lung_labels
from lungseg.errors import DatasetError, ImageReadError
from lungseg.imaging import CTImage, read_image, read_mask


@dataclass(frozen=True)
class CaseFile:
    """One image (slice file, volume file or DICOM series) and its masks.

    Attributes:
        source: the source's name (its folder name), used in case ids.
        patient: the split unit; cases of one patient always share a split.
        stem: the image's name without extension, unique within the source.
        image: image file or DICOM folder.
        lung_mask: lung mask file.
        infection_mask: infection mask file, or ``None``.
        infection_scheme: how ``infection_mask`` labels lesions.
        slice_index: where a 2D file sits in its volume, if its name says.
        source_split: a split the source itself proposes (``slices.csv``), if any.
    """

    source: str
    patient: str
    stem: str
    image: Path
    lung_mask: Path
    infection_mask: Path | None = None
    infection_scheme: InfectionLabels = InfectionLabels.NONE
    slice_index: int | None = None
    source_split: str | None = None

    @property
    def case_id(self) -> str:
        return f"{self.source}/{self.stem}"


@dataclass
class LoadedCase:
    """A case read into memory: stacks of ``(slices, rows, cols)`` in display order."""

    image: CTImage
    lung: np.ndarray  # lungseg lung labels
    infection: np.ndarray  # lungseg infection labels (zeros where not annotated)
    has_sides: bool


def load_case(case: CaseFile) -> LoadedCase:
    """Read a case's image and masks and convert the masks to lungseg labels.

    Raises:
        ImageReadError: a file is unreadable or the masks do not match the image.
    """
    image = read_image(case.image)
    lung_raw = read_mask(case.lung_mask, like=image).array
    try:
        lung, has_sides = sided_lung_labels(lung_raw)
        if case.infection_mask is not None:
            infection_raw = read_mask(case.infection_mask, like=image).array
            infection = infection_labels(infection_raw, case.infection_scheme)
        else:
            infection = np.zeros(lung.shape, dtype=np.uint8)
    except ValueError as error:
        raise ImageReadError(case.infection_mask or case.lung_mask, str(error)) from error
    return LoadedCase(image, lung, infection, has_sides)


def _entries(folder: Path) -> dict[str, Path]:
    """Image files and DICOM series sub-folders of a folder, by stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        found[strip_suffixes(path.name)] = path
    return found


# --- folders of images with matching mask folders ------------------------------

IMAGE_DIRS = ("2d_images", "images", "image", "ct", "ct_scans", "volumes")
LUNG_DIRS = ("2d_masks", "lung_masks", "lung_mask", "masks", "mask")
INFECTION_DIRS = ("infection_masks", "infection_mask")
SLICE_NAME = re.compile(r"^(?P<patient>.+?)_Z_(?P<z>\d+)$")


def _first_dir(root: Path, names: Iterable[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


@dataclass(frozen=True)
class SliceInfo:
    """What a source's ``slices.csv`` says of one file."""

    split: str | None = None  # the source's own split proposal (a ``*split`` column)
    patient: str | None = None  # the ``patient`` column


def _read_slices_csv(root: Path) -> dict[str, SliceInfo]:
    """``slices.csv``: column ``file``, optionally a ``*split`` and a ``patient`` column."""
    table = root / "slices.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "file" not in columns:
            return {}
        split_column = next((c for c in columns if c.endswith("split")), None)
        return {
            strip_suffixes(row["file"]): SliceInfo(
                row[split_column] if split_column else None,
                row["patient"] if "patient" in columns and row["patient"] else None,
            )
            for row in reader
        }


def detect_paired_folders(root: Path) -> bool:
    return _first_dir(root, IMAGE_DIRS) is not None and _first_dir(root, LUNG_DIRS) is not None


def paired_folder_cases(
    root: Path, infection_scheme: InfectionLabels = InfectionLabels.TYPED
) -> SourceListing:
    """Cases of a folder with an image folder and same-named mask folders.

    Layouts: ``2d_images/`` + ``2d_masks/`` (finding-lungs-ct), ``images/`` +
    ``lung_masks/`` + ``infection_masks/`` (medseg-covid-98), or ``images/`` with
    NIfTI volumes or DICOM series sub-folders + ``masks/`` with NIfTI masks. The
    patient of a file is the ``patient`` column of ``slices.csv`` where it has one;
    else names ``<patient>_Z_<slice>`` group slices of one patient; otherwise each
    image is its own patient. Infection masks are read as ``infection_scheme``.
    """
    image_dir = _first_dir(root, IMAGE_DIRS)
    lung_dir = _first_dir(root, LUNG_DIRS)
    if image_dir is None or lung_dir is None:
        raise DatasetError(
            f"{root}: expected an image folder {IMAGE_DIRS} and a mask folder {LUNG_DIRS}"
        )
    infection_dir = _first_dir(root, INFECTION_DIRS)
    lungs = _entries(lung_dir)
    infections = _entries(infection_dir) if infection_dir else {}
    table = _read_slices_csv(root)
    listing = SourceListing([])
    for stem, image in _entries(image_dir).items():
        if stem not in lungs:
            listing.unmatched.append(image)
            continue
        named = SLICE_NAME.match(stem)
        info = table.get(stem, SliceInfo())
        listing.cases.append(
            CaseFile(
                source=root.name,
                patient=info.patient or (named["patient"] if named else stem),
                stem=stem,
                image=image,
                lung_mask=lungs[stem],
                infection_mask=infections.get(stem),
                infection_scheme=infection_scheme if stem in infections else InfectionLabels.NONE,
                slice_index=int(named["z"]) if named else None,
                source_split=info.split,
            )
        )
    if not listing.cases:
        raise DatasetError(
            f"{root}: no image in {image_dir.name}/ has a mask of the same name in {lung_dir.name}/"
        )
    return listing


# --- the public COVID-19 CT scans (20 volumes) -----------------------------------
# Two layouts of the same data: the Kaggle copy ("COVID-19 CT scans":
# ct_scans/coronacases_org_001.nii, lung_mask/coronacases_001.nii, ...,
# metadata.csv) and the Zenodo record 3757476 as unpacked by
# `lungseg dataset download` (COVID-19-CT-Seg_20cases/coronacases_001.nii.gz,
# Lung_Mask/, Infection_Mask/, Lung_and_Infection_Mask/).

COVID_LAYOUTS = (
    ("ct_scans", "lung_mask", "infection_mask"),
    ("COVID-19-CT-Seg_20cases", "Lung_Mask", "Infection_Mask"),
)


def covid_case_name(file_name: str) -> str:
    """One name for a case in both layouts: ``coronacases_001``, ``radiopaedia_10_85902_1``."""
    name = strip_suffixes(Path(file_name).name)
    name = name.replace("_org_covid-19-pneumonia-", "_").replace("_org_", "_")
    return re.sub(r"-dcm$", "", name)


def detect_covid19_ct_seg(root: Path) -> bool:
    return any(
        (root / images).is_dir() and (root / lungs).is_dir() for images, lungs, _ in COVID_LAYOUTS
    )


def covid19_ct_seg_cases(root: Path) -> SourceListing:
    """Cases of the public COVID-19-CT-Seg set (20 CT volumes with lung and infection masks)."""
    for image_name, lung_name, infection_name in COVID_LAYOUTS:  # noqa: B007 (used after the loop)
        if (root / image_name).is_dir() and (root / lung_name).is_dir():
            break
    else:
        raise DatasetError(
            f"{root}: not a COVID-19-CT-Seg folder (expected ct_scans/ and lung_mask/)"
        )
    lungs = {covid_case_name(p.name): p for p in _entries(root / lung_name).values()}
    infection_dir = root / infection_name
    infections = (
        {covid_case_name(p.name): p for p in _entries(infection_dir).values()}
        if infection_dir.is_dir()
        else {}
    )
    listing = SourceListing([])
    for image in _entries(root / image_name).values():
        name = covid_case_name(image.name)
        if name not in lungs:
            listing.unmatched.append(image)
            continue
        listing.cases.append(
            CaseFile(
                source=root.name,
                patient=name,
                stem=name,
                image=image,
                lung_mask=lungs[name],
                infection_mask=infections.get(name),
                infection_scheme=InfectionLabels.BINARY
                if name in infections
                else InfectionLabels.NONE,
            )
        )
    if not listing.cases:
        raise DatasetError(f"{root}: no CT volume has a lung mask of the same case name")
    return listing


# --- 2D exports of COVID-19-CT-Seg (the public notebooks' CLAHE PNGs) ----------
# ``images/ma2020_p<patient>_<n>.png`` + ``lung_masks/`` + ``infection_masks/`` and a
# ``slices.csv`` with a ``patient`` column; infection is one label (ground glass and
# consolidation together), so it is read as binary, never as MedSeg's typed classes.

COVID_SLICES_NAME = re.compile(r"^ma2020_p\d+_\d+$")


def detect_covid19_ct_seg_slices(root: Path) -> bool:
    image_dir = _first_dir(root, IMAGE_DIRS)
    if image_dir is None or _first_dir(root, LUNG_DIRS) is None:
        return False
    first = next((p for p in sorted(image_dir.iterdir()) if not p.name.startswith(".")), None)
    return first is not None and COVID_SLICES_NAME.match(strip_suffixes(first.name)) is not None


def covid19_ct_seg_slice_cases(root: Path) -> SourceListing:
    """Cases of the 2D COVID-19-CT-Seg exports: patients from ``slices.csv``, binary infection."""
    return paired_folder_cases(root, InfectionLabels.BINARY)


@dataclass
class SourceListing:
    """What a source folder holds: its cases, and image files without a mask."""

    cases: list[CaseFile]
    unmatched: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class SourceKind:
    """A registered source layout: how to recognise it and how to list its cases."""

    name: str
    detect: Callable[[Path], bool]
    cases: Callable[[Path], SourceListing]


SOURCES: dict[str, SourceKind] = {
    "covid19-ct-seg": SourceKind("covid19-ct-seg", detect_covid19_ct_seg, covid19_ct_seg_cases),
    "covid19-ct-seg-slices": SourceKind(
        "covid19-ct-seg-slices", detect_covid19_ct_seg_slices, covid19_ct_seg_slice_cases
    ),
    "paired-folders": SourceKind("paired-folders", detect_paired_folders, paired_folder_cases),
}


def open_source(root: str | Path, kind: str | None = None) -> SourceListing:
    """Find a folder's layout (or use ``kind``) and list its cases.

    Raises:
        DatasetError: the folder is missing or has no known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if kind is not None:
        if kind not in SOURCES:
            raise DatasetError(f"unknown source kind {kind!r}; known: {', '.join(SOURCES)}")
        source = SOURCES[kind]
    else:
        detected = next((s for s in SOURCES.values() if s.detect(root)), None)
        if detected is None:
            raise DatasetError(
                f"{root}: unknown layout; expected COVID-19-CT-Seg (ct_scans/ + lung_mask/) "
                f"or an image folder {IMAGE_DIRS} with a mask folder {LUNG_DIRS}"
            )
        source = detected
    return source.cases(root)
