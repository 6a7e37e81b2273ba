"""Stage 1: turn CT volumes and slices with lung masks into a split, checked training set.

``build_dataset`` reads every source, splits by patient, drops lung-free slices
(keeping a share on request), runs the quality checks, stores the slices with a
manifest and writes the report. It builds in a hidden folder beside the target
and renames it at the end, so an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lungseg import __version__
from lungseg.core.labels import InfectionLabels
from lungseg.dataset.config import BuildConfig, BuildSummary
from lungseg.dataset.qc import check_slice
from lungseg.dataset.sources import CaseFile, LoadedCase, load_case, open_source
from lungseg.dataset.split import split_patients
from lungseg.dataset.store import ManifestRow, write_manifest
from lungseg.errors import DatasetError, ImageReadError
from lungseg.reporting import write_csv


def build_dataset(config: BuildConfig, out: str | Path, *, overwrite: bool = False) -> BuildSummary:
    """Build the dataset described by ``config`` into the folder ``out``.

    Raises:
        DatasetError: a source is unusable, nothing could be built, or ``out``
            exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; choose another folder or pass --overwrite")
    if not config.sources:
        raise DatasetError("no source folder given")
    summary = BuildSummary(out=out)
    cases = _collect_cases(config, summary)
    work = out.parent / f".{out.name}.building-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        _build_into(work, cases, config, summary)
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary


def _collect_cases(config: BuildConfig, summary: BuildSummary) -> list[CaseFile]:
    cases: list[CaseFile] = []
    seen_names: set[str] = set()
    for folder in config.sources:
        listing = open_source(folder)
        name = listing.cases[0].source
        if name in seen_names:
            raise DatasetError(f"two sources are both named {name!r}; rename one folder")
        seen_names.add(name)
        cases.extend(listing.cases)
        summary.unmatched.extend(str(p) for p in listing.unmatched)
    return cases


def _replace(work: Path, out: Path) -> None:
    """Move the finished build into place; an old ``out`` is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_into(
    work: Path, cases: list[CaseFile], config: BuildConfig, summary: BuildSummary
) -> None:
    from lungseg.dataset.report import write_report  # matplotlib only when building

    splits: dict[tuple[str, str], str] = {}
    for source in sorted({c.source for c in cases}):
        patients = [c.patient for c in cases if c.source == source]
        for patient, split in split_patients(patients, config.fractions, config.seed).items():
            splits[(source, patient)] = split

    rows: list[ManifestRow] = []
    qc_rows: list[dict[str, object]] = []
    for case in tqdm(cases, desc="building dataset", unit="case"):
        try:
            loaded = load_case(case)
        except ImageReadError as error:
            summary.unreadable.append((str(error.path), error.problem))
            continue
        split = splits[(case.source, case.patient)]
        case_rows, case_qc = _store_case(work, case, loaded, split, config, summary)
        rows.extend(case_rows)
        qc_rows.extend(case_qc)
    if not rows:
        raise DatasetError("no slice with lung could be stored; see the sources' files and masks")

    write_manifest(work / "manifest.csv", rows)
    write_csv(work / "qc.csv", qc_rows, first=("slice_id", "split", "flags", "full_view"))
    summary.slices_stored = len(rows)
    summary.slices_used = sum(r.use for r in rows)
    config_dict = asdict(config) | {"lungseg_version": __version__}
    (work / "build_config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    summary_dict = {k: v for k, v in asdict(summary).items() if k != "out"}
    (work / "build_summary.json").write_text(json.dumps(summary_dict, indent=2, default=str) + "\n")
    write_report(work, config, summary)


def _store_case(
    work: Path,
    case: CaseFile,
    loaded: LoadedCase,
    split: str,
    config: BuildConfig,
    summary: BuildSummary,
) -> tuple[list[ManifestRow], list[dict[str, object]]]:
    """Store one case's kept slices in one npz; return its manifest and QC rows."""
    image = loaded.image.slices()
    lung = loaded.lung.reshape(image.shape)
    infection = loaded.infection.reshape(image.shape)
    rng = np.random.default_rng([config.seed, zlib.crc32(case.case_id.encode())])
    spacing = loaded.image.geometry.spacing
    is_volume = loaded.image.is_volume

    keep: list[int] = []
    for index in range(0, image.shape[0], config.slice_step):
        if lung[index].any():
            keep.append(index)
        elif rng.random() < config.keep_lung_free:
            keep.append(index)
            summary.lung_free_kept += 1
        else:
            summary.lung_free_dropped += 1
    if not keep:
        return [], []

    array_file = Path("cases") / case.source / f"{case.stem}.npz"
    (work / array_file).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        work / array_file, image=image[keep], lung=lung[keep], infection=infection[keep]
    )
    rows: list[ManifestRow] = []
    qc_rows: list[dict[str, object]] = []
    for array_index, index in enumerate(keep):
        annotated = case.infection_scheme is not InfectionLabels.NONE
        result = check_slice(
            image[index],
            loaded.image.intensity,
            lung[index],
            infection[index] if annotated else None,
            config.qc,
        )
        slice_id = f"{case.case_id}#{array_index}"
        if result.flags:
            qc_rows.append(
                {
                    "slice_id": slice_id,
                    "split": split,
                    "flags": ";".join(result.flags),
                    "full_view": int(result.full_view),
                }
                | {k: round(v, 4) for k, v in result.measures.items()}
            )
        rows.append(
            ManifestRow(
                slice_id=slice_id,
                case_id=case.case_id,
                patient=case.patient,
                source=case.source,
                source_file=str(case.image),
                slice_index=str(index)
                if is_volume
                else ("" if case.slice_index is None else str(case.slice_index)),
                split=split,
                rows=image.shape[1],
                cols=image.shape[2],
                spacing_row_mm=None if spacing is None else round(spacing[-2], 4),
                spacing_col_mm=None if spacing is None else round(spacing[-1], 4),
                intensity=loaded.image.intensity,
                lung_fraction=round(float((lung[index] != 0).mean()), 5),
                has_sides=loaded.has_sides,
                infection_labels=case.infection_scheme,
                infection_fraction=round(float((infection[index] != 0).mean()), 5),
                body_in_view=result.full_view,
                qc_flags=tuple(result.flags),
                use=config.keep_flagged or not result.flags,
                source_split=case.source_split or "",
                array_file=array_file.as_posix(),
                array_index=array_index,
            )
        )
    return rows, qc_rows
