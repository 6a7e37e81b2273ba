"""Jobs off the event loop: the server answers while it segments, refuses with 503 when
full, and sweeps what a killed server left behind."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from models import dark_is_lung_onnx
from PIL import Image
from synthetic import ct_slice, display_slice

from lungseg.cli import main
from lungseg.inference import Predictor
from lungseg.serve.app import ServeSettings, create_app
from lungseg.serve.jobs import UPLOAD_PREFIX, Busy, ClientGone, JobGate, sweep_uploads


class SlowPredictor(Predictor):
    """A predictor whose predictions wait until the test lets them go."""

    def __init__(self, model: Path) -> None:
        super().__init__(model, infection=False)
        self.release = threading.Event()
        self.started = threading.Event()

    def segment(self, image, **options):  # type: ignore[no-untyped-def]
        self.started.set()
        assert self.release.wait(10), "the test never released the job"
        return super().segment(image, **options)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(display_slice(ct_slice(64)[0])).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_gate_runs_a_few_queues_a_few_and_refuses_the_rest() -> None:
    gate = JobGate(running=1, queued=1)
    release = threading.Event()

    def job(cancelled: threading.Event) -> str:
        release.wait(5)
        return "done"

    async def scenario() -> list[object]:
        first = asyncio.create_task(gate.run(None, job))
        second = asyncio.create_task(gate.run(None, job))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="busy"):
            await gate.run(None, job)
        release.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(scenario()) == ["done", "done"]


class Hangs:
    """A request whose client hangs up after ``after`` seconds."""

    def __init__(self, after: float) -> None:
        self.gone_at = time.monotonic() + after

    async def is_disconnected(self) -> bool:
        return time.monotonic() >= self.gone_at


def test_a_running_job_stops_when_its_client_hangs_up() -> None:
    gate = JobGate(running=1, queued=0)
    checks: list[float] = []

    def job(cancelled: threading.Event) -> str:  # checks as a scan's chunks would
        for _ in range(200):
            if cancelled.is_set():
                raise ClientGone("stopped")
            checks.append(time.monotonic())
            time.sleep(0.05)
        return "ran to the end"

    started = time.monotonic()
    with pytest.raises(ClientGone):
        asyncio.run(gate.run(Hangs(after=0.3), job))  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0  # not the job's 10 s
    assert len(checks) < 40
    # and the slot is free again
    assert asyncio.run(gate.run(None, lambda cancelled: "next")) == "next"


def test_health_answers_while_a_segmentation_runs_and_a_full_server_says_503(
    tmp_path: Path,
) -> None:
    predictor = SlowPredictor(dark_is_lung_onnx(tmp_path / "m.onnx"))
    app = create_app(ServeSettings(max_jobs=1, max_queue=0), predictor)
    with TestClient(app) as client:
        answers: list[int] = []
        worker = threading.Thread(
            target=lambda: answers.append(
                client.post("/api/v1/segment", files={"file": ("a.png", _png())}).status_code
            )
        )
        worker.start()
        assert predictor.started.wait(5)
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        assert time.perf_counter() - started < 1.0  # not stuck behind the job
        busy = client.post("/api/v1/segment", files={"file": ("b.png", _png())})
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
        predictor.release.set()
        worker.join(10)
    assert answers == [200]


def test_security_headers(tmp_path: Path) -> None:
    client = TestClient(
        create_app(ServeSettings(), Predictor(dark_is_lung_onnx(tmp_path / "m.onnx")))
    )
    for path in ("/", "/healthz", "/static/app.js"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert "default-src 'self'" in headers["Content-Security-Policy"], path


def test_upload_folders_of_dead_servers_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f"{UPLOAD_PREFIX}999999999-abc"
    alive = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-abc"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "upload.png").write_bytes(b"a patient's slice")
    assert sweep_uploads(tmp_path) == [dead]
    assert not dead.exists() and alive.exists()
    assert [p.name for p in tmp_path.iterdir()] == [alive.name]


def test_the_docs_work_offline(tmp_path: Path) -> None:
    client = TestClient(
        create_app(ServeSettings(), Predictor(dark_is_lung_onnx(tmp_path / "m.onnx")))
    )
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http" not in page.text  # no CDN: every asset from this server
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert client.get(asset).status_code == 200, asset
    assert "/api/v1/segment" in client.get("/openapi.json").json()["paths"]


def test_a_chunked_upload_is_cut_off_once_past_the_limit(tmp_path: Path) -> None:
    app = create_app(
        ServeSettings(max_slice_mb=1.0), Predictor(dark_is_lung_onnx(tmp_path / "m.onnx"))
    )
    pulled = 0
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'

    async def receive() -> dict:  # 64 MB offered, with no Content-Length
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": pulled < 65}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/segment",
        "raw_path": b"/api/v1/segment",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b"larger than 1 MB" in b"".join(m.get("body", b"") for m in sent[1:])
    assert pulled < 5  # reading stopped just past the limit (1 MB + 1 MB of slack)


def test_one_log_line_per_request_without_what_the_user_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(
        create_app(ServeSettings(), Predictor(dark_is_lung_onnx(tmp_path / "m.onnx")))
    )
    with caplog.at_level(logging.INFO, logger="lungseg.access"):
        client.get("/healthz")
        client.post("/api/v1/segment?format=mask", files={"file": ("patient-1234.png", _png())})
        client.post("/api/v1/segment", files={"file": ("x.png", b"")})
    lines = [r.getMessage() for r in caplog.records if r.name == "lungseg.access"]
    assert len(lines) == 3
    assert lines[0].startswith("GET /healthz 200 ")
    assert lines[1].startswith("POST /api/v1/segment 200 ") and lines[1].endswith(" ms")
    assert lines[2].startswith("POST /api/v1/segment 400 ")
    assert not any("patient" in line or "format" in line for line in lines)


def test_serve_refuses_an_address_in_use_before_claiming_to_serve(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"127.0.0.1:{port} is already in use" in captured.err
    assert "serving on" not in captured.out


def test_a_client_gone_before_its_zip_is_read_stops_the_reading(tmp_path: Path) -> None:
    """Issue 32: hanging up did not stop a zip's unpacking and reading; the job's
    cancellation now reaches the reader between two files."""
    import threading

    from synthetic import ct_volume, write_dicom_series, zip_files

    from lungseg.serve.answers import Service, volume_answer

    volume, _ = ct_volume(slices=4, size=32, lung_free=1)
    series = write_dicom_series(tmp_path / "series", volume)
    archive = zip_files(tmp_path / "series.zip", series)
    predictor = Predictor(dark_is_lung_onnx(tmp_path / "m.onnx"))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a hung-up client's scan was segmented")

    predictor.segment = never  # type: ignore[method-assign]
    service = Service.start(ServeSettings(), predictor)
    gone = threading.Event()
    gone.set()
    with pytest.raises(ClientGone):
        volume_answer(service, archive, "series.zip", "json", 0.0, gone)
