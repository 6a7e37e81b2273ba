"""``lungseg evaluate``: per-slice scores on a split, robustness variants, report with pictures.

For every slice of the split it scores the mask the exported model gives (with
the same post-processing users get) against the reference: Dice, IoU,
precision, recall, HD95 (mm where spacing is known). It scores the same slice
again turned/mirrored in each of the 8 orientations (the prediction is turned
back before scoring), and saved as an 8-bit PNG and as a JPEG (quality 75), the
way people upload slices.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lungseg.dataset.store import BuiltDataset
from lungseg.errors import DatasetError
from lungseg.evaluation.metrics import slice_scores
from lungseg.imaging import Intensity, to_display
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, dihedral_name, undo_dihedral
from lungseg.inference.model import SegmentationModel, postprocess_slice, segment_slices
from lungseg.training.augment import jpeg_roundtrip

JPEG_QUALITY = 75
SCORES = ("dice", "iou", "precision", "recall", "hd95")


@dataclass
class Variant:
    """One way of giving the model a slice: its pixels, and how to turn the answer back."""

    name: str
    image: np.ndarray
    intensity: Intensity
    turns: int = 0
    flip: bool = False


def variants_of(image: np.ndarray, intensity: Intensity) -> list[Variant]:
    """The slice in its 8 orientations, as an 8-bit PNG and as a JPEG."""
    out = [
        Variant(dihedral_name(t, f), apply_dihedral(image, t, f), intensity, t, f)
        for t, f in DIHEDRAL
    ]
    grey = to_display(image, intensity)
    out.append(Variant("png8", grey, Intensity.DISPLAY))
    jpeg = np.round(jpeg_roundtrip(grey / 255.0, JPEG_QUALITY) * 255.0).astype(np.uint8)
    out.append(Variant("jpeg", jpeg, Intensity.DISPLAY))
    return out


@dataclass
class Evaluation:
    """Per-slice rows and what they sum up to."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate(
    model_path: str | Path | None,
    data: str | Path,
    split: str,
    out: str | Path,
    *,
    variants: bool = True,
    scan: str | Path | None = None,
) -> Evaluation:
    """Score the model on one split of a built dataset and write the report into ``out``.

    With ``scan`` (a whole CT volume without masks), also check every level of it
    (``evaluation.series``).
    """
    from lungseg.evaluation.report import write_evaluation_report

    dataset = BuiltDataset(data)
    rows = dataset.select(split)
    if not rows:
        raise DatasetError(f"{data}: the {split} split is empty")
    model = SegmentationModel(model_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Evaluation()
    masks: dict[str, np.ndarray] = {}
    for row in tqdm(rows, desc=f"evaluating {split}", unit="slice"):
        record = dataset.load(row)
        truth = record.lung != 0
        spacing = (
            (float(row["spacing_row_mm"]), float(row["spacing_col_mm"]))
            if row["spacing_row_mm"]
            else None
        )
        cases = variants_of(record.image, record.intensity)
        if not variants:
            cases = cases[:1]
        raw_masks = segment_slices(
            model, [v.image for v in cases], [v.intensity for v in cases], postprocess=False
        )
        predicted = [
            postprocess_slice(m, v.image, v.intensity)
            for m, v in zip(raw_masks, cases, strict=True)
        ]
        raw = raw_masks[0]  # upright, before post-processing
        scores: dict[str, Any] = {
            "slice_id": row["slice_id"],
            "source": row["source"],
            "lung_fraction": float(row["lung_fraction"]),
            "hd95_unit": "mm" if spacing else "px",
        }
        upright = predicted[0]
        scores.update(slice_scores(upright, truth, spacing))
        scores["dice_no_postprocess"] = slice_scores(raw, truth)["dice"]
        for variant, mask in zip(cases[1:], predicted[1:], strict=True):
            back = undo_dihedral(mask, variant.turns, variant.flip)
            scores[f"dice_{variant.name}"] = slice_scores(back, truth)["dice"]
        masks[row["slice_id"]] = upright
        result.rows.append(scores)
    result.summary = summarise(result.rows, split, model)
    if scan is not None:
        from lungseg.evaluation.series import check_series

        result.summary["series"] = check_series(model, Path(scan), out)
    _write_table(out / "per_slice.csv", result.rows)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    write_evaluation_report(out, dataset, result, masks)
    return result


def summarise(rows: list[dict[str, Any]], split: str, model: SegmentationModel) -> dict[str, Any]:
    """Mean, median and worst slices per source, and each variant's mean Dice against upright."""
    summary: dict[str, Any] = {"split": split, "model": str(model.path), "sources": {}}
    for source in sorted({str(r["source"]) for r in rows}):
        subset = [r for r in rows if r["source"] == source]
        stats: dict[str, Any] = {"slices": len(subset)}
        for score in (*SCORES, "dice_no_postprocess"):
            values = np.array([float(r[score]) for r in subset], dtype=float)
            finite = values[np.isfinite(values)]
            stats[score] = {
                "mean": round(float(finite.mean()), 4) if finite.size else math.nan,
                "median": round(float(np.median(finite)), 4) if finite.size else math.nan,
            }
        worst = sorted(subset, key=lambda r: float(r["dice"]))[:5]
        stats["worst5"] = [
            {"slice_id": r["slice_id"], "dice": round(float(r["dice"]), 4)} for r in worst
        ]
        upright = float(np.mean([float(r["dice"]) for r in subset]))
        variant_means = {}
        for key in [k for k in subset[0] if k.startswith("dice_") and k != "dice_no_postprocess"]:
            mean = float(np.mean([float(r[key]) for r in subset]))
            variant_means[key[5:]] = {
                "mean_dice": round(mean, 4),
                "minus_upright": round(mean - upright, 4),
            }
        stats["variants"] = variant_means
        summary["sources"][source] = stats
    return summary


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
