"""The apex and base of single slices: small lungs with little anatomy around them.

A slice near the top or bottom of the lungs holds small lung cross-sections and no
heart or liver in view, so both the lungs and their sides are harder to find than
mid-lung. Here the first and last fifth of the lung-bearing slices of each test
patient (and of a whole scan, against its HU threshold labels) are each sent as one
picture, in every orientation and rendering ``lungseg evaluate`` uses, and scored as
``lungseg predict`` answers them.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.labels import LUNG_SIDE_UNKNOWN
from lungseg.core.masks import reference_sides, side_agreement
from lungseg.core.metrics import slice_scores
from lungseg.dataset.pseudo import threshold_lungs
from lungseg.dataset.store import BuiltDataset
from lungseg.imaging import Intensity, read_image
from lungseg.inference.check import check_picture
from lungseg.inference.model import SegmentationModel, TurnReading, segment_slices

END_SHARE = 0.2
"""The first and last this share of a patient's lung-bearing slices are apex and base."""
DICE_TARGET = 0.93
SIDES_TARGET = 0.99


@dataclass
class EndSlice:
    """One apex or base slice and its reference lung labels."""

    source: str
    name: str
    image: np.ndarray
    intensity: Intensity
    lung: np.ndarray  # reference labels (LUNG_SIDE_UNKNOWN where the sides are not given)


def end_levels(count: int) -> list[int]:
    """Positions (0..count-1, head or feet first alike) of the first and last fifth."""
    if count == 0:
        return []
    take = max(1, math.ceil(END_SHARE * count))
    return sorted(set(range(take)) | set(range(max(0, count - take), count)))


def dataset_end_slices(dataset: BuiltDataset, split: str, source: str) -> list[EndSlice]:
    """The apex and base slices of each patient of ``source`` in ``split`` (by slice index)."""
    by_patient: dict[str, list[Any]] = defaultdict(list)
    for row in dataset.select(split):
        if row.source == source and row.lung_fraction > 0 and _position(row) is not None:
            by_patient[row.patient].append(row)
    out = []
    for patient in sorted(by_patient):
        rows = sorted(by_patient[patient], key=lambda r: _position(r) or 0)
        for position in end_levels(len(rows)):
            record = dataset.load(rows[position])
            out.append(
                EndSlice(
                    source, rows[position].slice_id, record.image, record.intensity, record.lung
                )
            )
    return out


def _position(row: Any) -> int | None:
    """A slice's place in its volume: the manifest's slice index, else the number that
    ends its file name (``ma2020_p3_0279.png``)."""
    if str(row.slice_index).isdigit():
        return int(row.slice_index)
    found = re.search(r"(\d+)$", Path(str(row.source_file)).stem)
    return int(found.group(1)) if found else None


def scan_end_slices(scan_path: Path) -> list[EndSlice]:
    """The apex and base levels of a HU scan, against its threshold labels (sides unknown)."""
    scan = read_image(scan_path)
    reference = threshold_lungs(scan)
    levels = np.flatnonzero(reference.any(axis=(1, 2)))
    return [
        EndSlice(
            "scan",
            f"{scan_path.name} level {int(levels[position])}",
            scan.array[levels[position]],
            scan.intensity,
            np.where(reference[levels[position]], LUNG_SIDE_UNKNOWN, 0).astype(np.uint8),
        )
        for position in end_levels(len(levels))
    ]


def score_end_slices(model: SegmentationModel, slices: list[EndSlice]) -> dict[str, Any]:
    """Mean and lowest Dice and the share of right sides per source and way of sending,
    and the lowest of each over every way: ``{source: {...}}``."""
    from lungseg.evaluation.variants import SIDE_OK, back_to_slice, variants_of

    scores: dict[str, dict[str, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    for item in slices:
        truth = item.lung != 0
        sides = reference_sides(item.lung)
        cases = variants_of(item.image, item.intensity)
        readings: list[TurnReading | None] = []
        found = segment_slices(
            model, [v.image for v in cases], [v.intensity for v in cases], readings=readings
        )
        for variant, labels, reading in zip(cases, found, readings, strict=True):
            if check_picture(variant.image, variant.intensity, labels, reading).status == "refused":
                labels = np.zeros_like(labels)  # predict gives no mask
            back = back_to_slice(labels, variant, truth.shape)
            dice = slice_scores(back != 0, truth)["dice"]
            side_ok = int(side_agreement(back, sides) >= SIDE_OK)
            scores[item.source][variant.name].append((dice, side_ok))
    out: dict[str, Any] = {}
    for source, ways in scores.items():
        table = {
            name: {
                "mean_dice": round(float(np.mean([d for d, _ in values])), 4),
                "min_dice": round(float(np.min([d for d, _ in values])), 4),
                "sides_correct": round(float(np.mean([s for _, s in values])), 4),
            }
            for name, values in ways.items()
        }
        out[source] = {
            "slices": len(next(iter(ways.values()))),
            "ways": table,
            "lowest_mean_dice": min(v["mean_dice"] for v in table.values()),
            "lowest_sides_correct": min(v["sides_correct"] for v in table.values()),
        }
    return out


def check_apex_base(
    model: SegmentationModel,
    dataset: BuiltDataset,
    split: str,
    sources: list[str],
    scan: Path | None,
) -> dict[str, Any]:
    """The apex and base figures of ``sources`` in ``split`` and of ``scan``."""
    slices = [s for source in sources for s in dataset_end_slices(dataset, split, source)]
    if scan is not None:
        slices += scan_end_slices(scan)
    figures = score_end_slices(model, slices)
    figures["targets"] = {"mean_dice": DICE_TARGET, "sides_correct": SIDES_TARGET}
    return figures
