"""Uploads: size limits before and while a body is read, the security headers, and
an upload written to its private folder as it arrives."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lungseg.errors import LungsegError
from lungseg.serve.settings import ACCESS_LOGGER

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
MULTIPART_SLACK_MB = 1.0  # form fields and boundaries around the file in a request body


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

    def __init__(self, status: int, message: str, check: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.check = check  # an input refused as not an axial chest CT: the check


def file_type(name: str) -> str:
    """The upload's file type from its name: a known suffix, else "" (the reader then
    tells the type from the bytes; an unknown or absurdly long suffix is never used)."""
    lower = name.lower()
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else Path(lower.replace("\x00", "")).suffix
    return suffix if suffix in SLICE_SUFFIXES | VOLUME_SUFFIXES else ""


async def receive_upload(upload: UploadFile, limit_mb: float, target: Path) -> Path:
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
