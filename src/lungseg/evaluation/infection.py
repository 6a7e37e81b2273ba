"""Infection metrics, scored on what ``lungseg predict`` writes.

Each test slice goes through the ``Predictor`` (lungs, then ground glass and
consolidation kept inside the lungs), from the one network with an infection
head or from a lung model plus a separate infection model. Per slice: Dice of
infection (ground glass and consolidation as one class), its sensitivity and
specificity, Dice of each class where the source types lesions (MedSeg: ground
glass, consolidation, pleural effusion; on slices where the reference or the
prediction has it), the lesions over ``LESION_MM2`` found (lesion-level
sensitivity), and the infection area predicted on slices whose reference has
none (false positives). Sources: MedSeg's own published test split and the
covid19-ct-seg-clahe test patients, each reported on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from lungseg.core.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    INFECTION_UNTYPED,
    PLEURAL_EFFUSION,
)
from lungseg.core.metrics import Confusion
from lungseg.core.morphology import label
from lungseg.dataset.store import BuiltDataset, ManifestRow
from lungseg.dataset.tasks import infection_rows
from lungseg.errors import DatasetError, LungsegError
from lungseg.imaging import to_display
from lungseg.inference.model import SegmentationModel
from lungseg.inference.predictor import Predictor
from lungseg.reporting import markdown_table, save_figure, write_csv
from lungseg.visualize import overlay

LESION_MM2 = 10.0
"""Lesions of at least this area count in the lesion-level sensitivity."""
ASSUMED_FIELD_MM = 350.0
"""Field of view assumed across a slice whose pixel size is not stored (8-bit exports)."""

CLASSES = {
    "ground_glass": GROUND_GLASS,
    "consolidation": CONSOLIDATION,
    "pleural_effusion": PLEURAL_EFFUSION,
}


def binary_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, sensitivity and specificity of two binary masks (empty against empty: Dice 1)."""
    counts = Confusion.of(predicted, truth)
    dice = float(counts.dice())
    # undefined (NaN) where the reference has no lesion, or no lesion-free pixel
    sensitivity = math.nan if counts.tp + counts.fn == 0 else float(counts.recall())
    specificity = math.nan if counts.tn + counts.fp == 0 else float(counts.specificity())
    return {"dice": dice, "sensitivity": sensitivity, "specificity": specificity}


def evaluate_infection(
    model_path: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "test",
) -> dict[str, Any]:
    """Score infection as ``lungseg predict`` writes it on a split's slices with infection
    labels; write a report. ``model_path``: a network with a lung and an infection head."""
    dataset = BuiltDataset(data)
    rows = infection_rows(dataset, split)
    if not rows:
        raise DatasetError(f"{data}: no slices with infection labels in the {split} split")
    predictor = Predictor(model_path)
    if not predictor.infection_head:
        raise LungsegError(f"{model_path}: no infection head to score")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    pictures: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for row in tqdm(rows, desc=f"evaluating infection on {split}", unit="slice"):
        record = dataset.load(row)
        prediction = predictor.predict(record.image, intensity=record.intensity)
        assert prediction.infection is not None  # the predictor has an infection model
        predicted, truth = prediction.infection, record.infection
        lesion_truth = np.isin(truth, (GROUND_GLASS, CONSOLIDATION, INFECTION_UNTYPED))
        lesion_predicted = np.isin(predicted, (GROUND_GLASS, CONSOLIDATION))
        pixel_mm2 = _pixel_mm2(row, truth.shape)
        entry: dict[str, Any] = {
            "slice_id": row.slice_id,
            "source": row.source,
            "infection_fraction": row.infection_fraction,
            **binary_scores(lesion_predicted, lesion_truth),
            **_lesions_found(lesion_predicted, lesion_truth, pixel_mm2),
            "false_positive_mm2": float(lesion_predicted.sum() * pixel_mm2)
            if not lesion_truth.any()
            else math.nan,
        }
        typed = row.infection_labels == "typed"
        for name, value in CLASSES.items():
            present = typed and bool((truth == value).any() or (predicted == value).any())
            entry[f"dice_{name}"] = (
                binary_scores(predicted == value, truth == value)["dice"] if present else math.nan
            )
        table.append(entry)
        shown = np.where(lesion_truth & (truth == INFECTION_UNTYPED), GROUND_GLASS, truth)
        pictures[row.slice_id] = (
            to_display(record.image, record.intensity),
            predicted,
            shown.astype(np.uint8),
        )
    summary = _summarise(table, split, predictor.model)
    summary["covid_free"] = covid_free_slices(dataset, predictor, out)
    _write(out, table, summary, pictures)
    return summary


COVID_FREE_SOURCES = ("finding-lungs-ct",)
"""Sources of routine CT from before 2020: every finding on them is a false positive for
COVID-19 (or other disease that looks alike)."""


def covid_free_slices(dataset: BuiltDataset, predictor: Predictor, out: Path) -> dict[str, Any]:
    """Specificity on COVID-free slices, as ``predict`` reports findings: the share of the
    slices (of every split) with CT severity 0 in both lungs, and with more than 5 % of the
    lungs involved; a picture of the most involved (``covid_free_most_involved.png``)."""
    rows = [r for r in dataset.rows if r.source in COVID_FREE_SOURCES and r.lung_fraction > 0]
    if not rows:
        return {}
    found = []
    for row in tqdm(rows, desc="COVID-free slices", unit="slice"):
        record = dataset.load(row)
        prediction = predictor.predict(record.image, intensity=record.intensity)
        assert prediction.involvement is not None
        share = float(prediction.involvement["share"]["total"])  # type: ignore[index]
        severity = int(prediction.involvement["severity"]["total"])  # type: ignore[index]
        found.append((share, severity, row, record, prediction))
    found.sort(key=lambda item: -item[0])
    fig, axes = plt.subplots(2, 4, figsize=(13, 7.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (share, severity, row, record, prediction) in zip(axes.ravel(), found, strict=False):
        grey = to_display(record.image, record.intensity)
        ax.imshow(overlay(grey, infection=prediction.infection))
        ax.set_title(
            f"{row.slice_id.split('/')[-1].split('#')[0]}: {share:.1%}, severity {severity}",
            fontsize=8,
        )
    fig.suptitle("COVID-free routine CT: the slices with the most findings", fontsize=9)
    save_figure(fig, out / "covid_free_most_involved.png", 80, top=0.95)
    return {
        "sources": list(COVID_FREE_SOURCES),
        "slices": len(found),
        "severity_0": round(sum(s == 0 for _, s, *_ in found) / len(found), 4),
        "over_5_percent": round(sum(share > 0.05 for share, *_ in found) / len(found), 4),
        "by_split": {
            split: round(float(np.mean([s == 0 for _, s, r, *_ in found if r.split == split])), 4)
            for split in sorted({r.split for r in rows})
        },
        "most_involved": [
            {"slice_id": r.slice_id, "share": round(share, 4), "severity": s}
            for share, s, r, *_ in found[:8]
        ],
    }


def _pixel_mm2(row: ManifestRow, shape: tuple[int, ...]) -> float:
    if row.spacing is None:
        return (ASSUMED_FIELD_MM / shape[-1]) ** 2
    return row.spacing[0] * row.spacing[1]


def _lesions_found(predicted: np.ndarray, truth: np.ndarray, pixel_mm2: float) -> dict[str, float]:
    """Reference lesions (connected regions) of at least ``LESION_MM2``, and how many of
    them the prediction touches."""
    labels, count = label(truth)
    if count == 0:
        return {"lesions": 0, "lesions_found": 0}
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    big = np.flatnonzero(sizes * pixel_mm2 >= LESION_MM2)
    big = big[big > 0]
    hit = np.unique(labels[predicted & (labels > 0)])
    return {"lesions": int(big.size), "lesions_found": int(np.isin(big, hit).sum())}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else math.nan


def _summarise(table: list[dict[str, Any]], split: str, model: SegmentationModel) -> dict[str, Any]:
    def scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
        lesions = sum(r["lesions"] for r in rows)
        negatives = [
            r["false_positive_mm2"] for r in rows if math.isfinite(r["false_positive_mm2"])
        ]
        return {
            "slices": len(rows),
            "infection": {
                k: _mean([r[k] for r in rows]) for k in ("dice", "sensitivity", "specificity")
            },
            "lesion_sensitivity": round(sum(r["lesions_found"] for r in rows) / lesions, 4)
            if lesions
            else math.nan,
            "lesions": lesions,
            "slices_without_infection": len(negatives),
            "false_positive_mm2_mean": _mean(negatives),
            "per_class_dice": {name: _mean([r[f"dice_{name}"] for r in rows]) for name in CLASSES},
            "per_class_slices": {
                name: sum(math.isfinite(r[f"dice_{name}"]) for r in rows) for name in CLASSES
            },
        }

    sources = sorted({r["source"] for r in table})
    return {
        "split": split,
        "model": str(model.path),
        "lesion_mm2": LESION_MM2,
        **scores(table),
        "sources": {name: scores([r for r in table if r["source"] == name]) for name in sources},
    }


def _write(
    out: Path, table: list[dict[str, Any]], summary: dict[str, Any], pictures: dict[str, Any]
) -> None:
    write_csv(out / "infection_per_slice.csv", table)
    (out / "infection_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ordered = sorted((r for r in table if r["infection_fraction"] > 0), key=lambda r: r["dice"])
    picked = ordered[:4] + ordered[-4:][::-1]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), picked, strict=False):
        grey, predicted, truth = pictures[row["slice_id"]]
        both = np.concatenate(
            [overlay(grey, infection=truth), overlay(grey, infection=predicted)], axis=1
        )
        ax.imshow(both)
        name = row["slice_id"].split("/", 1)[1].split("#")[0]
        ax.set_title(f"{name}: Dice {row['dice']:.3f}\nreference | model", fontsize=8)
    fig.suptitle("infection: worst (top) and best (bottom) slices", fontsize=10)
    save_figure(fig, out / "infection_best_worst.png", 80)
    header = [
        "source",
        "slices",
        "Dice",
        "sensitivity",
        "specificity",
        f"lesions ≥ {LESION_MM2:g} mm² found",
        "false-positive mm² (slices without infection)",
        *[f"Dice {n}" for n in CLASSES],
    ]
    body = []
    for name, scores in [*summary["sources"].items(), ("all", summary)]:
        body.append(
            [
                name,
                scores["slices"],
                scores["infection"]["dice"],
                scores["infection"]["sensitivity"],
                scores["infection"]["specificity"],
                f"{scores['lesion_sensitivity']} (of {scores['lesions']})",
                f"{scores['false_positive_mm2_mean']} (n={scores['slices_without_infection']})",
                *[
                    f"{scores['per_class_dice'][n]} (n={scores['per_class_slices'][n]})"
                    for n in CLASSES
                ],
            ]
        )
    lines = [
        f"# Infection on the {summary['split']} split",
        "",
        f"Model `{summary['model']}`. Scored as `lungseg predict` writes it: ground glass and "
        "consolidation inside the predicted lungs. Infection = ground glass + consolidation; "
        "per-class Dice only where the source types lesions (MedSeg). Pixel size from the "
        f"source, or a {ASSUMED_FIELD_MM:g} mm field of view where it is not stored.",
        "",
        markdown_table(header, body),
        "",
        "![worst and best](infection_best_worst.png)",
        "",
    ]
    free = summary.get("covid_free")
    if free:
        lines += [
            "## COVID-free routine CT",
            "",
            f"{free['slices']} slices of {', '.join(free['sources'])} (routine CT from before "
            f"2020, every split): CT severity 0 on {100 * free['severity_0']:.1f} % of them, "
            f"more than 5 % of the lungs marked on {100 * free['over_5_percent']:.1f} %. The "
            "most marked:",
            "",
            "![COVID-free slices with the most findings](covid_free_most_involved.png)",
            "",
        ]
    (out / "infection_report.md").write_text("\n".join(lines))
