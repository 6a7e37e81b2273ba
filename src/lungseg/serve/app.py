"""The web API and the viewer page.

Stateless by design: an upload lives in memory and, only while it is decoded,
in a private temporary folder of its own request (created with mode 0700,
deleted before the answer leaves), never in a folder shared between users. The
model is loaded once per worker process; onnxruntime sessions are safe to call
from the threads FastAPI serves requests on. Any number of workers or machines
can therefore sit behind a load balancer.
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import uvicorn.config
from fastapi import FastAPI, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from lungseg import __version__
from lungseg.errors import ImageReadError, LungsegError, TooLargeError
from lungseg.imaging import to_display
from lungseg.imaging.intensity import MEDIASTINAL_WINDOW
from lungseg.imaging.readers import DEFAULT_LIMITS, ReadLimits
from lungseg.imaging.types import Intensity
from lungseg.inference import Prediction, Predictor
from lungseg.inference.outputs import (
    annotated_overlay,
    infection_png,
    lung_png,
    png_bytes,
    volume_mask_dicom_seg,
    volume_mask_nifti,
)
from lungseg.inference.result import describe
from lungseg.serve.jobs import (
    RETRY_AFTER_S,
    Busy,
    ClientGone,
    JobGate,
    sweep_uploads,
    upload_folder,
)
from lungseg.serve.schemas import ERRORS, Frame, SliceAnswer, VolumeAnswer

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # Swagger UI styles inline
)
SLICE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ""}
VOLUME_SUFFIXES = {".nii", ".nii.gz", ".zip"}
VIEWER_SIDE = 256  # volume slices are sent to the page at this size
MULTIPART_SLACK_MB = 1.0  # form fields and boundaries around the file in a request body


@dataclass(frozen=True)
class ServeSettings:
    """Limits and model of the server (``lungseg serve`` flags).

    Attributes:
        model: ONNX model path; the shipped model by default.
        max_slice_mb: largest slice upload.
        max_volume_mb: largest volume upload (NIfTI or zip of a DICOM series).
        threads: onnxruntime threads per worker (0: all cores).
        infection: also segment COVID-19 infection (where the infection model ships).
        max_jobs: segmentations running at once per worker (each in its own thread).
        max_queue: segmentations waiting per worker; beyond it the answer is 503.
        max_slices: slices of one volume (``imaging.readers.ReadLimits``).
        max_voxels: voxels of one volume; with the defaults one upload stays within
            about 2.5 GB of server memory (``benchmarks/hostile.py``).
    """

    model: str | None = None
    max_slice_mb: float = 32.0
    max_volume_mb: float = 512.0
    threads: int = 0
    infection: bool = True
    max_jobs: int = 2
    max_queue: int = 16
    max_slices: int = DEFAULT_LIMITS.max_slices
    max_voxels: int = DEFAULT_LIMITS.max_voxels

    ENV: ClassVar[dict[str, str]] = {
        "model": "LUNGSEG_MODEL",
        "max_slice_mb": "LUNGSEG_MAX_SLICE_MB",
        "max_volume_mb": "LUNGSEG_MAX_VOLUME_MB",
        "threads": "LUNGSEG_THREADS",
        "infection": "LUNGSEG_INFECTION",
        "max_jobs": "LUNGSEG_MAX_JOBS",
        "max_queue": "LUNGSEG_MAX_QUEUE",
        "max_slices": "LUNGSEG_MAX_SLICES",
        "max_voxels": "LUNGSEG_MAX_VOXELS",
    }

    @classmethod
    def from_env(cls) -> ServeSettings:
        """Settings from ``LUNGSEG_*`` variables (how ``lungseg serve`` hands them to its workers)."""
        values: dict[str, Any] = {}
        for name, variable in cls.ENV.items():
            if os.environ.get(variable):
                text = os.environ[variable]
                converters: dict[str, Callable[[str], Any]] = {
                    "model": str,
                    "threads": int,
                    "max_jobs": int,
                    "max_queue": int,
                    "max_slices": int,
                    "max_voxels": int,
                    "infection": lambda v: v == "True",
                }
                values[name] = converters.get(name, float)(text)
        return cls(**values)

    @property
    def limits(self) -> ReadLimits:
        return ReadLimits(max_slices=self.max_slices, max_voxels=self.max_voxels)

    def to_env(self) -> dict[str, str]:
        return {
            variable: str(getattr(self, name))
            for name, variable in self.ENV.items()
            if getattr(self, name) is not None
        }


ACCESS_LOGGER = logging.getLogger("lungseg.access")
"""One line per request: method, path (no query), status, milliseconds. Never a file
name or any other part of what a user sent."""

ACCESS_LOG_CONFIG: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
ACCESS_LOG_CONFIG["loggers"]["lungseg.access"] = {
    "handlers": ["default"],
    "level": "INFO",
    "propagate": False,
}


class LimitsAndHeaders:
    """ASGI middleware: refuses an upload whose declared size (``Content-Length``) is
    over its endpoint's limit before reading it, stops reading a body (chunked, or
    longer than declared) once past the limit, and adds the security headers.

    A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one hides a
    client's disconnect from the endpoint, which then could not stop its job.
    """

    def __init__(self, app: ASGIApp, limits_mb: dict[str, float]) -> None:
        self.app = app
        self.limits_mb = limits_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = [0]

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, logged_send)
        finally:
            ACCESS_LOGGER.info(
                "%s %s %d %.0f ms",
                scope["method"],
                scope["path"],
                status[0],
                (time.perf_counter() - began) * 1000,
            )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"])
        limit_mb = self.limits_mb.get(path)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Content-Security-Policy"] = (
                    DOCS_SECURITY_POLICY if path == "/docs" else CONTENT_SECURITY_POLICY
                )
            await send(message)

        if limit_mb is None:
            await self.app(scope, receive, send_with_headers)
            return
        limit = int((limit_mb + MULTIPART_SLACK_MB) * 1024 * 1024)
        declared = Headers(scope=scope).get("content-length", "")
        too_large = JSONResponse({"error": f"upload larger than {limit_mb:g} MB"}, 413)
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send_with_headers)
            return
        received, exceeded = 0, False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def send_or_refuse(message: Message) -> None:
            # the app may turn the interrupted read into its own error: answer 413 instead
            if not exceeded:
                await send_with_headers(message)
            elif message["type"] == "http.response.start":
                await too_large(scope, receive, send_with_headers)

        try:
            await self.app(scope, counted_receive, send_or_refuse)
        except _BodyTooLarge:
            if not started:
                await too_large(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    """A request body ran past its endpoint's limit while it was read."""


class UploadError(LungsegError):
    """An upload the server refuses; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _suffix(name: str) -> str:
    """The upload's file type from its name: a known suffix, else "" (the reader then
    tells the type from the bytes; an unknown or absurdly long suffix is never used)."""
    lower = name.lower()
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else Path(lower.replace("\x00", "")).suffix
    return suffix if suffix in SLICE_SUFFIXES | VOLUME_SUFFIXES else ""


async def _receive_upload(upload: UploadFile, limit_mb: float, target: Path) -> Path:
    """Write the upload to ``target`` as it is read, refusing more than ``limit_mb``
    without reading the rest (the whole upload is never held in memory)."""
    limit = int(limit_mb * 1024 * 1024)
    size = 0
    with target.open("wb") as sink:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise UploadError(413, f"upload larger than {limit_mb:g} MB")
            sink.write(chunk)
    if size == 0:
        raise UploadError(400, "the uploaded file is empty")
    return target


def _b64_png(array: np.ndarray) -> str:
    return _b64(png_bytes(array))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def create_app(
    settings: ServeSettings | None = None, predictor: Predictor | None = None
) -> FastAPI:
    """The FastAPI application; ``predictor`` may be given (tests), else it is loaded here."""
    settings = settings or ServeSettings.from_env()
    predictor = predictor or Predictor(
        settings.model, infection=settings.infection, threads=settings.threads
    )
    app = FastAPI(
        title="lungseg",
        version=__version__,
        description="Lung segmentation on chest CT slices and scans.",
        docs_url=None,  # served below from packaged assets: no CDN, works offline
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    gate = JobGate(settings.max_jobs, settings.max_queue)
    model_info = predictor.model_info()
    sweep_uploads()

    app.add_middleware(
        LimitsAndHeaders,
        limits_mb={
            "/api/v1/segment": settings.max_slice_mb,
            "/api/v1/segment-volume": settings.max_volume_mb,
        },
    )

    @app.exception_handler(Busy)
    async def _busy(_request: Request, error: Busy) -> JSONResponse:
        return JSONResponse(
            {"error": str(error)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    @app.exception_handler(ClientGone)
    async def _gone(_request: Request, error: ClientGone) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=499)

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(LungsegError)
    async def _read_error(_request: Request, error: LungsegError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    def segment_upload(
        path: Path, name: str, volume: bool, cancelled: threading.Event
    ) -> Prediction:
        """Segment an upload written to ``path`` (in its private folder). Runs in a job
        thread; stops (``ClientGone``) between two chunks of slices once ``cancelled``."""

        def progress(_done: int, _total: int) -> None:
            if cancelled.is_set():
                raise ClientGone("the client disconnected; its job was stopped")

        try:
            prediction = predictor.predict(path, limits=settings.limits, progress=progress)
        except TooLargeError as error:
            raise UploadError(413, f"{name}: {error.problem}") from error
        except ImageReadError as error:  # name the user's file, not the private folder
            raise UploadError(400, f"{name}: {error.problem}") from error
        if prediction.image.is_volume != volume:
            where = "/api/v1/segment-volume" if prediction.image.is_volume else "/api/v1/segment"
            raise UploadError(400, f"this is a {prediction.kind}; send it to {where}")
        return prediction

    def slice_answer(
        path: Path, name: str, format: str, started: float, cancelled: threading.Event
    ) -> Response:
        """The whole answer to a slice, built in the job thread (PNG and JSON encoding
        included: nothing heavy runs on the event loop)."""
        prediction = segment_upload(path, name, False, cancelled)
        if format == "mask":
            return Response(lung_png(prediction.lung), media_type="image/png")
        overlay = annotated_overlay(prediction)  # R/L and a legend: a picture to keep
        if format == "overlay":
            return Response(png_bytes(overlay), media_type="image/png")
        image = prediction.image
        mediastinal = _mediastinal(image.array, image.intensity)
        answer = SliceAnswer(
            **_summary(prediction, name, started),
            image_png=_b64_png(to_display(image.array, image.intensity)),
            mediastinal_png=None if mediastinal is None else _b64_png(mediastinal),
            mask_png=_b64(lung_png(prediction.lung)),
            overlay_png=_b64_png(overlay),
            infection_png=None
            if prediction.infection is None
            else _b64(infection_png(prediction.infection)),
        )
        return _json(answer)

    def _summary(prediction: Prediction, name: str, started: float) -> dict[str, Any]:
        total_ms = (time.perf_counter() - started) * 1000
        return dict(describe(prediction, model=model_info, file=name, total_ms=total_ms))

    def volume_answer(
        path: Path, name: str, format: str, started: float, cancelled: threading.Event
    ) -> Response:
        """The whole answer to a scan, built in the job thread, a slice at a time."""
        prediction = segment_upload(path, name, True, cancelled)
        if prediction.image.geometry.affine is None:
            raise UploadError(
                400,
                f"{name}: a stack of pictures without patient geometry, not a scan; "
                "send a NIfTI volume or a zip of a DICOM series",
            )
        if format == "seg":
            if not prediction.image.geometry.dicom_headers:
                raise UploadError(400, f"{name}: a DICOM Segmentation needs a DICOM series")
            return Response(
                volume_mask_dicom_seg(prediction),
                media_type="application/dicom",
                headers={"Content-Disposition": "attachment; filename=seg.dcm"},
            )
        nifti = volume_mask_nifti(prediction)
        if format == "nifti":
            return Response(
                nifti,
                media_type="application/gzip",
                headers={"Content-Disposition": "attachment; filename=mask.nii.gz"},
            )
        image, frames = prediction.image, []
        for index, mask in enumerate(prediction.lung):
            plane = image.array[index]
            mediastinal = _mediastinal(plane, image.intensity)
            frames.append(
                Frame(
                    image_png=_b64_png(_shrink(to_display(plane, image.intensity), False)),
                    mediastinal_png=None
                    if mediastinal is None
                    else _b64_png(_shrink(mediastinal, False)),
                    mask_png=_b64(lung_png(_shrink(mask, True))),
                    infection_png=None
                    if prediction.infection is None
                    else _b64(infection_png(_shrink(prediction.infection[index], True))),
                )
            )
        answer = VolumeAnswer(
            **_summary(prediction, name, started),
            mask_nifti=_b64(nifti),
            slices=frames,
        )
        return _json(answer)

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
        name = upload.filename or "upload"
        folder = upload_folder()
        try:
            target = folder / ("upload" + (_suffix(name) or ".bin"))
            path = await _receive_upload(upload, limit_mb, target)
            return await gate.run(request, job, path, name, format, started)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:  # on the event loop: answers while jobs run
        return {"status": "ok", "model": model_info.name}

    @app.get("/api/v1/model")
    def model_card() -> dict[str, Any]:
        return predictor.model.card or model_info.model_dump()

    @app.post(
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
        if _suffix(name) in VOLUME_SUFFIXES:
            raise UploadError(400, f"{name} is a volume; send it to /api/v1/segment-volume")
        return await answer(request, file, settings.max_slice_mb, slice_answer, format, started)

    @app.post(
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
        if _suffix(name) not in VOLUME_SUFFIXES:
            raise UploadError(415, f"{name}: send a .nii, .nii.gz or a .zip of a DICOM series")
        return await answer(request, file, settings.max_volume_mb, volume_answer, format, started)

    return app


def _json(answer: SliceAnswer | VolumeAnswer) -> Response:
    """The answer as JSON (pydantic encodes it; no second pass through dicts)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def _mediastinal(plane: np.ndarray, intensity: Intensity) -> np.ndarray | None:
    """The slice in the mediastinal window; ``None`` for 8-bit pictures (already windowed)."""
    if intensity is not Intensity.HU:
        return None
    return to_display(plane, intensity, MEDIASTINAL_WINDOW)


def _shrink(plane: np.ndarray, labels: bool) -> np.ndarray:
    image = Image.fromarray(plane)
    longest = max(plane.shape)
    if longest <= VIEWER_SIDE:
        return plane
    scale = VIEWER_SIDE / longest
    size = (max(1, round(plane.shape[1] * scale)), max(1, round(plane.shape[0] * scale)))
    method = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    return np.asarray(image.resize(size, method))
