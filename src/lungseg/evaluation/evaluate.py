"""``lungseg evaluate``: per-slice scores on a split, what users upload, report with pictures.

For every slice of the split it scores the lung the exported model gives (with
the post-processing users get) against the reference: Dice, IoU, precision,
recall, HD95 (mm where spacing is known). Then it scores the slice as users
meet it:

- turned and mirrored in each of the 8 orientations (the prediction is turned
  back before scoring), with the share of slices whose right and left lung are
  right (``side_ok``: at least ``SIDE_OK`` of the lung found carries its own side);
- HU slices through every exporter of ``imaging.render.RENDERINGS``, saved as
  PNG and as JPEG (the renderings table);
- 8-bit slices saved again as JPEG.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lungseg.core.masks import reference_sides, side_agreement
from lungseg.core.metrics import slice_scores
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import DatasetError
from lungseg.evaluation.variants import (
    ORDERED_SOURCES,
    SCORES,
    SIDE_OK,
    WORST_KEPT,
    Evaluation,
    back_to_slice,
    variants_of,
)
from lungseg.imaging.orientation import DIHEDRAL
from lungseg.inference.check import check_picture
from lungseg.inference.model import SegmentationModel, TurnReading, segment_slices
from lungseg.reporting import write_csv


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
    worst: dict[str, list[tuple[float, str, np.ndarray, np.ndarray]]] = {}
    for row in tqdm(rows, desc=f"evaluating {split}", unit="slice"):
        record = dataset.load(row)
        truth = record.lung != 0
        sides = reference_sides(record.lung)
        spacing = row.spacing
        cases = variants_of(record.image, record.intensity)
        if not variants:
            cases = cases[:1]
        raw: list[np.ndarray] = []
        readings: list[TurnReading | None] = []
        predicted = segment_slices(
            model,
            [v.image for v in cases],
            [v.intensity for v in cases],
            raw=raw,
            readings=readings,
        )
        scores: dict[str, Any] = {
            "slice_id": row.slice_id,
            "source": row.source,
            "patient": row.patient,
            "lung_fraction": row.lung_fraction,
            "hd95_unit": "mm" if spacing else "px",
        }
        scores["dice_no_postprocess"] = slice_scores(raw[0] != 0, truth)["dice"]
        for index, (variant, reading) in enumerate(zip(cases, readings, strict=True)):
            check = check_picture(variant.image, variant.intensity, predicted[index], reading)
            scores[f"check_{variant.name}"] = check.status
            scores[f"reasons_{variant.name}"] = " | ".join(check.reasons)
            if check.status == "refused":  # predict gives no mask: scored as none found
                predicted[index] = np.zeros_like(predicted[index])
        upright = predicted[0]
        scores.update(slice_scores(upright != 0, truth, spacing))
        for variant, labels, reading in zip(cases, predicted, readings, strict=True):
            back = back_to_slice(labels, variant, truth.shape)
            if variant.kind != "orientation" or variant.turns or variant.flip:
                scores[f"dice_{variant.name}"] = slice_scores(back != 0, truth)["dice"]
            if variant.kind == "orientation":
                scores[f"side_ok_{variant.name}"] = int(side_agreement(back, sides) >= SIDE_OK)
            if variant.kind == "orientation" and model.orients:
                scores[f"turn_ok_{variant.name}"] = int(
                    (0 if reading is None else reading.turn)
                    == DIHEDRAL.index((variant.turns, variant.flip))
                )
            if variant.kind == "rendering":  # keep only the worst few pictures in memory
                kept = worst.setdefault(variant.name, [])
                kept.append((scores[f"dice_{variant.name}"], row.slice_id, variant.image, back))
                kept.sort(key=lambda item: item[0])
                del kept[WORST_KEPT:]
        masks[row.slice_id] = upright != 0
        result.rows.append(scores)
    result.summary = summarise(result.rows, split, model)
    result.summary["checks"] = summarise_checks(result.rows)
    ordered = [s for s in ORDERED_SOURCES if s in result.summary["sources"]]
    if variants and (ordered or scan is not None):
        from lungseg.evaluation.apex_base import check_apex_base

        result.summary["apex_base"] = check_apex_base(
            model, dataset, split, ordered, None if scan is None else Path(scan)
        )
    if scan is not None:
        from lungseg.evaluation.series import check_series

        result.summary["series"] = check_series(model, Path(scan), out)
    write_csv(out / "per_slice.csv", result.rows)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    write_evaluation_report(out, dataset, result, masks, worst, model)
    return result


LOW_DICE = 0.85
HIGH_DICE = 0.95
"""The check's targets: ``review`` catches the answers below ``LOW_DICE`` and leaves
those at ``HIGH_DICE`` or above alone."""


def summarise_checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well ``inference.check`` tells wrong answers from right ones: of every slice in
    every way it was sent, the share flagged (review or refused) among those with lung
    Dice below ``LOW_DICE`` and among those at ``HIGH_DICE`` or above, and among the
    answers (in the 8 orientations) whose right and left came out swapped; how many real
    CT pictures were refused; the reasons given to good answers."""
    pairs = []  # (source, Dice, status, reasons, sides right: 1, 0, or None where unscored)
    for row in rows:
        for key, status in row.items():
            if not key.startswith("check_"):
                continue
            name = key[len("check_") :]
            dice = float(row["dice"] if name == "upright" else row[f"dice_{name}"])
            side = row.get(f"side_ok_{name}")
            if math.isfinite(dice):
                why = str(row[f"reasons_{name}"])
                pairs.append((str(row["source"]), dice, status, why, side))

    def figures(chosen: list[tuple[str, float, str, str, Any]]) -> dict[str, Any]:
        low = [p for p in chosen if p[1] < LOW_DICE]
        high = [p for p in chosen if p[1] >= HIGH_DICE]
        swapped = [p for p in chosen if p[4] is not None and p[1] >= LOW_DICE and not p[4]]
        return {
            "answers": len(chosen),
            "low_dice": len(low),
            "low_dice_flagged": round(float(np.mean([p[2] != "ok" for p in low])), 4)
            if low
            else None,
            "high_dice": len(high),
            "high_dice_flagged": round(float(np.mean([p[2] != "ok" for p in high])), 4)
            if high
            else None,
            "sides_wrong": len(swapped),
            "sides_wrong_flagged": round(float(np.mean([p[2] != "ok" for p in swapped])), 4)
            if swapped
            else None,
            "refused": sum(p[2] == "refused" for p in chosen),
        }

    out = figures(pairs)
    out["sources"] = {
        s: figures([p for p in pairs if p[0] == s]) for s in sorted({p[0] for p in pairs})
    }
    reasons: dict[str, int] = {}
    for _, dice, status, text, _side in pairs:
        if status != "ok" and dice >= HIGH_DICE:
            for reason in text.split(" | "):
                short = reason.split(" (")[0].split(":")[0]
                reasons[short] = reasons.get(short, 0) + 1
    out["reasons_on_high_dice"] = dict(sorted(reasons.items(), key=lambda i: -i[1]))
    out["targets"] = {"low_dice_flagged": 0.9, "high_dice_flagged": 0.1}
    return out


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
            variant_dice = [float(r[key]) for r in subset]
            mean = float(np.mean(variant_dice))
            variant_means[key[5:]] = {
                "mean_dice": round(mean, 4),
                "minus_upright": round(mean - upright, 4),
                "min_dice": round(float(np.min(variant_dice)), 4),
            }
        stats["variants"] = variant_means
        for name, prefix in (("sides_correct", "side_ok_"), ("turn_found", "turn_ok_")):
            stats[name] = {
                key[len(prefix) :]: round(float(np.mean([int(r[key]) for r in subset])), 4)
                for key in subset[0]
                if key.startswith(prefix)
            }
        patients = sorted({str(r["patient"]) for r in subset})
        stats["patients"] = len(patients)
        stats["dice_per_patient"] = (
            {
                p: round(float(np.mean([float(r["dice"]) for r in subset if r["patient"] == p])), 4)
                for p in patients
            }
            if len(patients) <= 10
            else {}
        )
        summary["sources"][source] = stats
    return summary
