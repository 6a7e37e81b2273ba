"""A prediction, and the one description of it: ``Prediction`` is what the Predictor
found (the arrays); ``Summary`` (``describe``) is what ``lungseg predict --json`` prints,
the web API answers (with pictures added), the cohort CSV flattens and the OpenAPI
schema at ``/docs`` shows.

    summary = describe(prediction, model=predictor.model_info())
    summary.lung.total, summary.notes, summary.model_dump_json()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from lungseg.imaging import CTImage


class Check(BaseModel):
    """Whether to trust the answer (``lungseg.inference.check``): ``ok``; ``review`` (a
    mask was made, but look before using it); ``refused`` (not an axial chest CT as far as
    lungseg can tell: no mask). ``reasons``: why, one short sentence each."""

    status: Literal["ok", "review", "refused"]
    reasons: list[str] = Field(default_factory=list)


class SliceLung(BaseModel):
    """One slice of a volume: where it lies and its lung area."""

    index: int = Field(description="position in the returned arrays (0 = feet end)")
    number: int = Field(description="slice number head to feet (1 = top), as viewers count")
    instance: int | None = Field(description="the DICOM InstanceNumber; null for NIfTI")
    z_mm: float | None = Field(description="position along the feet-to-head axis in mm")
    right: float = Field(description="right lung area (mm², px without spacing)")
    left: float
    total: float


class Lung(BaseModel):
    """Lung size: areas for a slice, volumes for a scan."""

    unit: Literal["mm2", "mL", "px"]
    right: float
    left: float
    total: float
    per_slice: list[SliceLung] | None = Field(None, description="a volume's slices")


class Shares(BaseModel):
    """Share (0..1) of each lung covered by ground glass or consolidation (or mL)."""

    right: float
    left: float
    total: float


class Severity(BaseModel):
    """CT severity score 0-5 per lung (Pan et al. 2020, applied per lung), total 0-10."""

    right: int
    left: int
    total: int


class Zones(BaseModel):
    """Share of each third of a lung, by height, with ground glass or consolidation."""

    upper: float
    middle: float
    lower: float


class Involvement(BaseModel):
    """COVID-19 findings inside the lungs (effusion: beside them). A lung involved below
    1 % scores severity 0 (specks, a nodule or a tumour are not COVID-19 involvement)."""

    share: Shares
    severity: Severity
    ground_glass_px: int
    consolidation_px: int
    effusion_px: int
    ground_glass_ml: float | None = None
    consolidation_ml: float | None = None
    effusion_ml: float | None = None
    per_slice: list[Shares] | None = Field(None, description="a volume's shares per slice")
    involved_ml: Shares | None = Field(None, description="a volume's involved mL per lung")
    zones: dict[str, Zones] | None = Field(
        None, description="a volume's share per lung (right, left) and third by height"
    )
    trained_on: str = Field(description="what the findings come from and what they are not")


class ModelInfo(BaseModel):
    name: str
    created: str | None = None
    sha256: str | None = None
    lungseg_version: str


class Timings(BaseModel):
    segment: float = Field(description="reading and segmenting, ms")
    total: float = Field(description="from request (or input) to answer, ms")


class Summary(BaseModel):
    """What lungseg found in one input."""

    file: str
    kind: Literal["slice", "volume"]
    check: Check = Field(description="whether to trust this answer, and why not")
    size: list[int] = Field(description="array shape: (rows, cols) or (slices, rows, cols)")
    spacing_mm: list[float] | None
    intensity: str = Field(description="hu, or display for 8-bit pictures")
    lung: Lung
    involvement: Involvement | None = None
    notes: list[str] = Field(description="how the input was read and anything guessed")
    timings_ms: Timings
    model: ModelInfo
    outputs: list[str] | None = Field(None, description="files written (lungseg predict)")


class Failure(BaseModel):
    """An input that could not be segmented (``lungseg predict --json``), or an API error."""

    file: str | None = None
    error: str


@dataclass
class Prediction:
    """What the Predictor found in one input.

    Attributes:
        image: the input as read (pixels in display order, geometry, intensity).
        lung: uint8 labels of ``image.array``'s shape: 0 background, 1 right, 2 left lung.
        measures: ``right``, ``left`` and ``total`` lung size in ``unit``.
        per_slice: for a volume, each slice's place (number head to feet, DICOM
            instance number, z) and ``right``/``left``/``total`` lung area in mm²
            (pixels without spacing), in the array's slice order.
        unit: ``mm2`` for a slice with spacing, ``mL`` for a volume with spacing, ``px`` without.
        seconds: time spent reading and segmenting.
    """

    image: CTImage
    lung: np.ndarray
    measures: dict[str, float]
    unit: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    infection: np.ndarray | None = None  # 0 none, 1 ground glass, 2 consolidation, 3 effusion
    involvement: dict[str, object] | None = None  # see inference.infection.involvement
    per_slice: list[SliceLung] | None = None  # a volume's slices: place and lung area
    check: Check = field(default_factory=lambda: Check(status="ok"))  # whether to trust it

    @property
    def kind(self) -> str:
        return "volume" if self.image.is_volume else "slice"


def describe(
    prediction: Prediction,
    *,
    model: ModelInfo,
    file: str | None = None,
    total_ms: float | None = None,
    outputs: list[str] | None = None,
) -> Summary:
    """The summary of a prediction; ``file`` names the input (by default its path)."""
    image = prediction.image
    geometry = image.geometry
    segment_ms = round(prediction.seconds * 1000, 1)
    return Summary(
        file=str(image.source) if file is None else file,
        kind="volume" if image.is_volume else "slice",
        check=prediction.check,
        size=list(image.array.shape),
        spacing_mm=list(geometry.spacing) if geometry.spacing else None,
        intensity=image.intensity.value,
        lung=Lung(
            unit=prediction.unit,  # type: ignore[arg-type]
            **{k: round(v, 2) for k, v in prediction.measures.items()},
            per_slice=prediction.per_slice,
        ),
        involvement=None
        if prediction.involvement is None
        else Involvement.model_validate(prediction.involvement),
        notes=prediction.notes,
        timings_ms=Timings(
            segment=segment_ms, total=segment_ms if total_ms is None else round(total_ms, 1)
        ),
        model=model,
        outputs=outputs,
    )
