"""The API's answers: the prediction summary every client gets (the shape
``lungseg predict --json`` prints), plus the pictures a viewer needs. FastAPI puts
them in the OpenAPI schema, so ``/docs`` shows real response bodies."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lungseg.inference.result import Check, Summary


class SliceAnswer(Summary):
    """A slice's summary and its pictures as base64 PNGs."""

    image_png: str = Field(description="the slice, 8-bit, lung window for HU inputs")
    mediastinal_png: str | None = Field(
        description="the slice in the mediastinal window (W350 L40); null for 8-bit pictures"
    )
    mask_png: str = Field(description="palette PNG: 0 background, 1 right lung, 2 left lung")
    overlay_png: str = Field(description="the slice with the lungs drawn, R/L and a legend")
    infection_png: str | None = Field(
        description="palette PNG: 0 none, 1 ground glass, 2 consolidation, 3 effusion"
    )


class Frame(BaseModel):
    """One slice of a scan for a viewer (longest side 256 px), in the array's order."""

    image_png: str = Field(description="lung window")
    mediastinal_png: str | None = Field(description="mediastinal window; null for 8-bit stacks")
    mask_png: str
    infection_png: str | None = None


class VolumeAnswer(Summary):
    """A scan's summary, its mask and every slice for a viewer."""

    mask_nifti: str = Field(description="base64 .nii.gz of the lung labels (the input's grid)")
    slices: list[Frame]


class ErrorAnswer(BaseModel):
    error: str
    check: Check | None = None  # a refused input (422): status "refused" and the reason


ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorAnswer, "description": why}
    for status, why in {
        400: "unreadable or unsupported input",
        413: "upload or image over the server's limits",
        415: "not a volume file",
        422: "refused: not an axial chest CT (the answer's check says why; no mask)",
        499: "the client hung up; its job was stopped",
        503: "busy: retry after the Retry-After seconds",
    }.items()
}
