"""The ways ``lungseg evaluate`` sends each slice (``variants_of``: the 8 orientations,
every exporter's rendering as PNG and JPEG, an 8-bit slice again as JPEG), how an answer
comes back onto the slice, and what an evaluation is; shared by the evaluation, its
report and the apex/base check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from lungseg.imaging import Intensity
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, dihedral_name, undo_dihedral
from lungseg.imaging.render import EVAL_JPEG_QUALITY, RENDERINGS, jpeg, render_hu

SCORES = ("dice", "iou", "precision", "recall", "hd95")
WORST_KEPT = 3
"""Worst slices per rendering kept for the report's picture."""
SIDE_OK = 0.9
"""A slice's sides are right when at least this share of the lung found carries its own side."""
ORDERED_SOURCES = ("covid19-ct-seg-clahe",)
"""Sources whose slices are ordered within a patient: their apex and base are scored apart."""


@dataclass
class Variant:
    """One way of giving the model a slice: its pixels, and how to turn the answer back."""

    name: str
    image: np.ndarray
    intensity: Intensity
    turns: int = 0
    flip: bool = False
    kind: str = "orientation"  # orientation / rendering / format


def variants_of(image: np.ndarray, intensity: Intensity) -> list[Variant]:
    """The slice in its 8 orientations (upright first); HU slices through every exporter
    as PNG and JPEG; 8-bit slices as JPEG."""
    out = [
        Variant(dihedral_name(t, f), apply_dihedral(image, t, f), intensity, t, f)
        for t, f in DIHEDRAL
    ]
    if intensity is Intensity.HU:
        for rendering in RENDERINGS.values():
            for as_jpeg in (False, True):
                out.append(
                    Variant(
                        f"{rendering.name}.{'jpg' if as_jpeg else 'png'}",
                        render_hu(image, rendering, as_jpeg=as_jpeg),
                        Intensity.DISPLAY,
                        rendering.turns,
                        rendering.flip,
                        "rendering",
                    )
                )
    else:
        picture = image.astype(np.uint8)
        out.append(
            Variant("jpeg", jpeg(picture, EVAL_JPEG_QUALITY), Intensity.DISPLAY, kind="format")
        )
    return out


def back_to_slice(labels: np.ndarray, variant: Variant, shape: tuple[int, ...]) -> np.ndarray:
    """A variant's prediction in the slice's own orientation and size."""
    back = undo_dihedral(labels, variant.turns, variant.flip)
    if back.shape != shape:  # the exporter resized the picture
        back = np.asarray(
            Image.fromarray(back).resize((shape[1], shape[0]), Image.Resampling.NEAREST),
            dtype=np.uint8,
        )
    return back


@dataclass
class Evaluation:
    """Per-slice rows and what they sum up to."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
