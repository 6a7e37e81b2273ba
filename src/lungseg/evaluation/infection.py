"""Infection metrics: what Inf-Net and the COVID-19 benchmark papers report.

Per test slice: Dice of infection (ground glass and consolidation as one class),
sensitivity and specificity of the same, and Dice of each class (ground glass,
consolidation, pleural effusion) on the slices where the reference or the
prediction has it. The model is scored on the whole slice, as those papers do;
``lungseg predict`` additionally keeps ground glass and consolidation inside the
lungs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from lungseg.dataset.labels import CONSOLIDATION, GROUND_GLASS, PLEURAL_EFFUSION
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import DatasetError
from lungseg.imaging import to_display
from lungseg.inference.infection import infection_labels
from lungseg.inference.model import SegmentationModel
from lungseg.reporting import markdown_table
from lungseg.training.tasks import get_task
from lungseg.visualize import overlay

CLASSES = {
    "ground_glass": GROUND_GLASS,
    "consolidation": CONSOLIDATION,
    "pleural_effusion": PLEURAL_EFFUSION,
}


def binary_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, sensitivity and specificity of two binary masks (empty against empty: Dice 1)."""
    tp = float((predicted & truth).sum())
    fp = float((predicted & ~truth).sum())
    fn = float((~predicted & truth).sum())
    tn = float((~predicted & ~truth).sum())
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    sensitivity = math.nan if tp + fn == 0 else tp / (tp + fn)
    specificity = math.nan if tn + fp == 0 else tn / (tn + fp)
    return {"dice": dice, "sensitivity": sensitivity, "specificity": specificity}


def evaluate_infection(
    model_path: str | Path, data: str | Path, out: str | Path, split: str = "test"
) -> dict[str, Any]:
    """Score an infection model on a split (MedSeg's own test split by default); write a report."""
    dataset = BuiltDataset(data)
    rows = get_task("infection").rows(dataset, split, False)
    if not rows:
        raise DatasetError(f"{data}: no slices with typed infection labels in the {split} split")
    model = SegmentationModel(model_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    pictures: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for row in tqdm(rows, desc=f"evaluating infection on {split}", unit="slice"):
        record = dataset.load(row)
        predicted = infection_labels(model, [record.image], record.intensity)[0]
        truth = record.infection
        scores = binary_scores(
            np.isin(predicted, (GROUND_GLASS, CONSOLIDATION)),
            np.isin(truth, (GROUND_GLASS, CONSOLIDATION)),
        )
        entry: dict[str, Any] = {
            "slice_id": row["slice_id"],
            "infection_fraction": float(row["infection_fraction"]),
            **scores,
        }
        for name, value in CLASSES.items():
            present = bool((truth == value).any() or (predicted == value).any())
            entry[f"dice_{name}"] = (
                binary_scores(predicted == value, truth == value)["dice"] if present else math.nan
            )
        table.append(entry)
        pictures[row["slice_id"]] = (to_display(record.image, record.intensity), predicted, truth)
    summary = _summarise(table, split, model)
    _write(out, table, summary, pictures)
    return summary


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else math.nan


def _summarise(table: list[dict[str, Any]], split: str, model: SegmentationModel) -> dict[str, Any]:
    return {
        "split": split,
        "model": str(model.path),
        "slices": len(table),
        "infection": {
            k: _mean([r[k] for r in table]) for k in ("dice", "sensitivity", "specificity")
        },
        "per_class_dice": {name: _mean([r[f"dice_{name}"] for r in table]) for name in CLASSES},
        "per_class_slices": {
            name: sum(math.isfinite(r[f"dice_{name}"]) for r in table) for name in CLASSES
        },
    }


def _write(
    out: Path, table: list[dict[str, Any]], summary: dict[str, Any], pictures: dict[str, Any]
) -> None:
    with (out / "infection_per_slice.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(
            {k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()} for r in table
        )
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
    fig.tight_layout()
    fig.savefig(out / "infection_best_worst.png", dpi=80)
    plt.close(fig)
    lines = [
        f"# Infection on the {summary['split']} split",
        "",
        f"Model `{summary['model']}`, {summary['slices']} slices. Infection = ground glass + consolidation.",
        "",
        markdown_table(
            ["Dice", "sensitivity", "specificity", *[f"Dice {n}" for n in CLASSES]],
            [
                [
                    summary["infection"]["dice"],
                    summary["infection"]["sensitivity"],
                    summary["infection"]["specificity"],
                ]
                + [
                    f"{summary['per_class_dice'][n]} (n={summary['per_class_slices'][n]})"
                    for n in CLASSES
                ]
            ],
        ),
        "",
        "![worst and best](infection_best_worst.png)",
        "",
    ]
    (out / "infection_report.md").write_text("\n".join(lines))
