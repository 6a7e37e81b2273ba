"""The endpoints, as module-level functions on one router. Each finds the worker's
``Service`` (settings, model, job gate) on ``request.app.state.service``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response

from lungseg.serve.answers import Service, slice_answer, volume_answer
from lungseg.serve.jobs import upload_folder
from lungseg.serve.schemas import ERRORS, SliceAnswer, VolumeAnswer
from lungseg.serve.uploads import VOLUME_SUFFIXES, UploadError, file_type, receive_upload
from lungseg.visualize import colour_table

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter()


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def answer(
    request: Request,
    upload: UploadFile,
    limit_mb: float,
    job: Callable[..., Response],
    format: str,
    started: float,
) -> Response:
    """Receive the upload into a private folder, run ``job`` on it through the gate,
    and remove the folder whatever happens."""
    service = service_of(request)
    name = upload.filename or "upload"
    folder = upload_folder()
    try:
        target = folder / ("upload" + (file_type(name) or ".bin"))
        path = await receive_upload(upload, limit_mb, target)
        return await service.gate.run(request, job, service, path, name, format, started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs", include_in_schema=False)
def docs() -> FileResponse:
    return FileResponse(STATIC / "docs.html")


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:  # on the event loop: answers while jobs run
    return {"status": "ok", "model": service_of(request).model_info.name}


@router.get("/api/v1/model")
def model_card(request: Request) -> dict[str, Any]:
    service = service_of(request)
    return service.predictor.model.card.to_dict()


@router.get("/api/v1/colours")
def colours() -> dict[str, dict[str, dict[str, object]]]:
    """Each mask's label values with their names and the colours every output draws them
    in (``lungseg.visualize.colour_table``); the page draws with these."""
    return colour_table()


@router.post(
    "/api/v1/segment",
    response_model=None,
    responses={
        200: {
            "model": SliceAnswer,
            "content": {"image/png": {}},
            "description": "JSON, or a PNG with format=mask or overlay",
        },
        **ERRORS,
    },
)
async def segment(
    request: Request,
    file: UploadFile,
    format: str = Query("json", pattern="^(json|overlay|mask)$"),
) -> Response:
    """Segment one slice (PNG, JPG, TIFF, BMP or DICOM file).

    ``format=json`` answers sizes, lung areas (right/left/total), timings, the
    model and three PNGs in base64 (display image, mask, overlay); ``overlay``
    or ``mask`` answers that PNG alone. Mask labels: 0 background, 1 right lung,
    2 left lung.
    """
    started = time.perf_counter()
    name = file.filename or "upload"
    if file_type(name) in VOLUME_SUFFIXES:
        raise UploadError(400, f"{name} is a volume; send it to /api/v1/segment-volume")
    limit = service_of(request).settings.max_slice_mb
    return await answer(request, file, limit, slice_answer, format, started)


@router.post(
    "/api/v1/segment-volume",
    response_model=None,
    responses={
        200: {
            "model": VolumeAnswer,
            "content": {"application/gzip": {}, "application/dicom": {}},
            "description": "JSON; the mask .nii.gz with format=nifti; "
            "a DICOM Segmentation with format=seg",
        },
        **ERRORS,
    },
)
async def segment_volume(
    request: Request,
    file: UploadFile,
    format: str = Query("json", pattern="^(json|nifti|seg)$"),
) -> Response:
    """Segment a scan: a NIfTI volume (.nii, .nii.gz) or a zip of one DICOM series.

    ``format=json`` answers the lung volumes in mL (right/left/total), the mask
    as NIfTI in base64 and every slice (256 px) with its mask as PNGs for a
    viewer; ``nifti`` answers the mask NIfTI (.nii.gz) alone; ``seg`` (a DICOM
    series only) a DICOM Segmentation of the lungs over the series.
    """
    started = time.perf_counter()
    name = file.filename or "upload"
    if file_type(name) not in VOLUME_SUFFIXES:
        raise UploadError(415, f"{name}: send a .nii, .nii.gz or a .zip of a DICOM series")
    limit = service_of(request).settings.max_volume_mb
    return await answer(request, file, limit, volume_answer, format, started)
