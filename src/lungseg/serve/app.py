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
import io
import os
import shutil
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fastapi import FastAPI, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from lungseg import __version__
from lungseg.errors import ImageReadError, LungsegError, TooLargeError
from lungseg.imaging import to_display
from lungseg.imaging.readers import DEFAULT_LIMITS, ReadLimits
from lungseg.inference import Prediction, Predictor
from lungseg.inference.outputs import overlay_picture, png_bytes, volume_mask_nifti
from lungseg.serve.jobs import (
    RETRY_AFTER_S,
    Busy,
    ClientGone,
    JobGate,
    sweep_uploads,
    upload_folder,
)

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SLICE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ""}
VOLUME_SUFFIXES = {".nii", ".nii.gz", ".zip"}
VIEWER_SIDE = 256  # volume slices are sent to the page at this size
UNZIPPED_MAX_GB = 4
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


async def _read_upload(upload: UploadFile, limit_mb: float) -> bytes:
    """The upload's bytes, refusing more than ``limit_mb`` without reading it all."""
    limit = int(limit_mb * 1024 * 1024)
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"upload larger than {limit_mb:g} MB")
        chunks.append(chunk)
    if size == 0:
        raise UploadError(400, "the uploaded file is empty")
    return b"".join(chunks)


def _b64_png(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _model_info(predictor: Predictor) -> dict[str, Any]:
    card = predictor.model.card
    return {
        "name": card.get("name", predictor.model.path.name),
        "created": card.get("created"),
        "sha256": card.get("onnx", {}).get("sha256"),
        "lungseg_version": __version__,
    }


def _summary(
    prediction: Prediction, name: str, started: float, predictor: Predictor
) -> dict[str, Any]:
    """The fields both endpoints answer: what was read, the lung measures, timings, model."""
    geometry = prediction.image.geometry
    return {
        "file": name,
        "kind": prediction.kind,
        "size": list(prediction.image.array.shape),
        "spacing_mm": list(geometry.spacing) if geometry.spacing else None,
        "intensity": prediction.image.intensity.value,
        "lung": {
            "unit": prediction.unit,
            **{k: round(v, 2) for k, v in prediction.measures.items()},
        },
        "notes": prediction.notes,
        "timings_ms": {
            "segment": round(prediction.seconds * 1000, 1),
            "total": round((time.perf_counter() - started) * 1000, 1),
        },
        "model": _model_info(predictor),
        "involvement": prediction.involvement,
    }


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
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    gate = JobGate(settings.max_jobs, settings.max_queue)
    sweep_uploads()

    limits_mb = {
        "/api/v1/segment": settings.max_slice_mb,
        "/api/v1/segment-volume": settings.max_volume_mb,
    }

    @app.middleware("http")
    async def _limits_and_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        limit_mb = limits_mb.get(request.url.path)
        declared = request.headers.get("content-length", "")
        # refuse on the declared size, before the body is read (and spooled to disk)
        too_large = (
            limit_mb is not None
            and declared.isdigit()
            and int(declared) > (limit_mb + MULTIPART_SLACK_MB) * 1024 * 1024
        )
        if too_large:
            return JSONResponse({"error": f"upload larger than {limit_mb:g} MB"}, status_code=413)
        response: Response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith(("/docs", "/redoc")):  # Swagger's assets load remotely
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

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

    def decode(data: bytes, name: str, volume: bool, cancelled: threading.Event) -> Prediction:
        """Segment uploaded bytes inside a private temporary folder, removed at once.
        Stops (``ClientGone``) between two chunks of slices once ``cancelled`` is set."""

        def progress(_done: int, _total: int) -> None:
            if cancelled.is_set():
                raise ClientGone("the client disconnected; its job was stopped")

        folder = upload_folder()
        try:
            target = folder / ("upload" + (_suffix(name) or ".bin"))
            if volume and target.suffix == ".zip":
                target = folder / "series"
                _unzip_series(data, target, settings.limits)
            else:
                target.write_bytes(data)
            try:
                prediction = predictor.predict(target, limits=settings.limits, progress=progress)
            except TooLargeError as error:
                raise UploadError(413, f"{name}: {error.problem}") from error
            except ImageReadError as error:  # name the user's file, not the private folder
                raise UploadError(400, f"{name}: {error.problem}") from error
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if prediction.image.is_volume != volume:
            where = "/api/v1/segment-volume" if prediction.image.is_volume else "/api/v1/segment"
            raise UploadError(400, f"this is a {prediction.kind}; send it to {where}")
        return prediction

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:  # on the event loop: answers while jobs run
        return {"status": "ok", "model": str(_model_info(predictor)["name"])}

    @app.get("/api/v1/model")
    def model_card() -> dict[str, Any]:
        return predictor.model.card or _model_info(predictor)

    @app.post("/api/v1/segment", response_model=None)
    async def segment(
        request: Request,
        file: UploadFile,
        format: str = Query("json", pattern="^(json|overlay|mask)$"),
    ) -> Response | dict[str, Any]:
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
        data = await _read_upload(file, settings.max_slice_mb)
        prediction = await gate.run(request, decode, data, name, False)
        if format == "mask":
            return Response(png_bytes(prediction.lung), media_type="image/png")
        overlay = overlay_picture(prediction)
        if format == "overlay":
            return Response(png_bytes(overlay), media_type="image/png")
        grey = to_display(prediction.image.array, prediction.image.intensity)
        return _summary(prediction, name, started, predictor) | {
            "image_png": _b64_png(grey),
            "mask_png": _b64_png(prediction.lung),
            "overlay_png": _b64_png(overlay),
            "infection_png": _b64_png(prediction.infection)
            if prediction.infection is not None
            else None,
        }

    @app.post("/api/v1/segment-volume", response_model=None)
    async def segment_volume(
        request: Request,
        file: UploadFile,
        format: str = Query("json", pattern="^(json|nifti)$"),
    ) -> Response | dict[str, Any]:
        """Segment a scan: a NIfTI volume (.nii, .nii.gz) or a zip of one DICOM series.

        ``format=json`` answers the lung volumes in mL (right/left/total), the mask
        as NIfTI in base64 and every slice (256 px) with its mask as PNGs for a
        viewer; ``nifti`` answers the mask NIfTI (.nii.gz) alone.
        """
        started = time.perf_counter()
        name = file.filename or "upload"
        if _suffix(name) not in VOLUME_SUFFIXES:
            raise UploadError(415, f"{name}: send a .nii, .nii.gz or a .zip of a DICOM series")
        data = await _read_upload(file, settings.max_volume_mb)
        prediction = await gate.run(request, decode, data, name, True)
        if prediction.image.geometry.affine is None:
            raise UploadError(
                400,
                f"{name}: a stack of pictures without patient geometry, not a scan; "
                "send a NIfTI volume or a zip of a DICOM series",
            )
        nifti = volume_mask_nifti(prediction)
        if format == "nifti":
            return Response(
                nifti,
                media_type="application/gzip",
                headers={"Content-Disposition": "attachment; filename=mask.nii.gz"},
            )
        grey = to_display(prediction.image.array, prediction.image.intensity)
        frames = []
        for index, (plane, mask) in enumerate(zip(grey, prediction.lung, strict=True)):
            frame = {
                "image_png": _b64_png(_shrink(plane, False)),
                "mask_png": _b64_png(_shrink(mask, True)),
            }
            if prediction.infection is not None:
                frame["infection_png"] = _b64_png(_shrink(prediction.infection[index], True))
            frames.append(frame)
        return _summary(prediction, name, started, predictor) | {
            "mask_nifti": base64.b64encode(nifti).decode("ascii"),
            "slices": frames,
        }

    return app


def _shrink(plane: np.ndarray, labels: bool) -> np.ndarray:
    image = Image.fromarray(plane)
    longest = max(plane.shape)
    if longest <= VIEWER_SIDE:
        return plane
    scale = VIEWER_SIDE / longest
    size = (max(1, round(plane.shape[1] * scale)), max(1, round(plane.shape[0] * scale)))
    method = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    return np.asarray(image.resize(size, method))


def _unzip_series(data: bytes, folder: Path, limits: ReadLimits) -> None:
    """Unpack a zip of DICOM files flat into ``folder``, refusing zip bombs and odd paths
    (member names are never used; each member is read up to its declared size only)."""
    folder.mkdir()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if len(members) > limits.max_files:
                raise UploadError(
                    413,
                    f"the zip holds {len(members)} files, more than the limit of "
                    f"{limits.max_files}",
                )
            if sum(m.file_size for m in members) > UNZIPPED_MAX_GB * 1024**3:
                raise UploadError(413, f"the zip unpacks to more than {UNZIPPED_MAX_GB} GB")
            for index, member in enumerate(members):
                with (
                    bundle.open(member) as source,
                    (folder / f"{index:05d}.dcm").open("wb") as sink,
                ):
                    shutil.copyfileobj(source, sink)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
        # corrupt, truncated, an unsupported compression method, or encrypted
        raise UploadError(400, f"not a readable zip: {error}") from error
