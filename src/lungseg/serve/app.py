"""The web API and the viewer page: the application, put together.

Stateless by design: an upload lives in memory and, only while it is decoded,
in a private temporary folder of its own request (created with mode 0700,
deleted before the answer leaves), never in a folder shared between users. The
model is loaded once per worker process; onnxruntime sessions are safe to call
from the threads FastAPI serves requests on. Any number of workers or machines
can therefore sit behind a load balancer.

The parts: ``settings`` (flags and limits), ``uploads`` (size limits, security
headers, receiving a file), ``answers`` (what a slice or scan upload gets back),
``routes`` (the endpoints), ``schemas`` (the answers' shapes), ``jobs`` (the gate
that bounds running and waiting jobs), ``protocol`` (the HTTP connection guard).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from lungseg import __version__
from lungseg.errors import LungsegError
from lungseg.inference import Predictor
from lungseg.serve.answers import Service
from lungseg.serve.jobs import RETRY_AFTER_S, Busy, ClientGone, sweep_uploads
from lungseg.serve.routes import STATIC, router
from lungseg.serve.settings import ACCESS_LOG_CONFIG, ServeSettings
from lungseg.serve.uploads import LimitsAndHeaders, UploadError

__all__ = ["ACCESS_LOG_CONFIG", "ServeSettings", "application", "create_app"]

SWAGGER_UI = Path(fastapi_standalone_docs.__path__[0]) / "static" / "swagger"
"""Swagger UI 5 (it reads the OpenAPI 3.1 document FastAPI emits), packaged by
``fastapi-standalone-docs``: /docs is served from here, never from a CDN."""


async def _busy(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": str(error)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


async def _gone(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=499)


async def _upload_error(_request: Request, error: Exception) -> JSONResponse:
    status = error.status if isinstance(error, UploadError) else 400
    body: dict[str, object] = {"error": str(error)}
    if isinstance(error, UploadError) and error.check is not None:
        body["check"] = error.check
    return JSONResponse(body, status_code=status)


async def _read_error(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=400)


def create_app(
    settings: ServeSettings | None = None, predictor: Predictor | None = None
) -> FastAPI:
    """The FastAPI application; ``predictor`` may be given (tests), else it is loaded here."""
    settings = settings or ServeSettings.from_env()
    app = application(settings)
    app.state.service = Service.start(settings, predictor)
    return app


def application(settings: ServeSettings) -> FastAPI:
    """The application without its model: routes, limits, headers and error answers.
    It serves once ``app.state.service`` is set (``create_app`` does)."""
    app = FastAPI(
        title="lungseg",
        version=__version__,
        description="Lung segmentation on chest CT slices and scans.",
        docs_url=None,  # served by the router from packaged assets: no CDN, works offline
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    sweep_uploads()
    app.add_middleware(
        LimitsAndHeaders,
        limits_mb={
            "/api/v1/segment": settings.max_slice_mb,
            "/api/v1/segment-volume": settings.max_volume_mb,
        },
    )
    app.add_exception_handler(Busy, _busy)
    app.add_exception_handler(ClientGone, _gone)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(LungsegError, _read_error)
    app.include_router(router)
    return app
