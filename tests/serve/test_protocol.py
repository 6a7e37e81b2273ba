"""The server's connection guards, against a real uvicorn on a real socket: slow heads,
slow bodies and too many connections are cut off; normal requests are untouched."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request

from lungseg.serve import protocol
from lungseg.serve.protocol import GuardedH11Protocol


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("LUNGSEG_HEADER_TIMEOUT_S", "0.5")
    monkeypatch.setenv("LUNGSEG_MIN_BODY_RATE", "1000")
    monkeypatch.setenv("LUNGSEG_MAX_CONNECTIONS", "4")
    monkeypatch.setattr(protocol, "RATE_WINDOW_S", 0.5)
    config = uvicorn.Config(
        _app(), host="127.0.0.1", port=0, http=GuardedH11Protocol, log_level="error"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield port
    instance.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (fails if it stays open ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def _get(port: int, path: str = "/healthz") -> bytes:
    with _connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_a_normal_request_and_upload_are_served(server: int) -> None:
    assert b"200 OK" in _get(server)
    body = b"x" * 100_000
    with _connect(server) as sock:
        head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        sock.sendall((head + "Connection: close\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert b'{"bytes":100000}' in answer


def test_a_head_sent_slowly_is_cut_off(server: int) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert _closed_within(sock, 5) < 2
    with _connect(server) as sock:  # an idle connection that sends nothing at all
        assert _closed_within(sock, 5) < 2


def test_a_body_sent_at_a_trickle_is_cut_off(server: int) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                sock.sendall(b"x")  # 10 bytes a second, far below the 1000 required
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - started < 3
        assert _closed_within(sock, 5) < 3


def test_connections_beyond_the_limit_are_closed_at_once(server: int) -> None:
    held = [_connect(server) for _ in range(4)]
    time.sleep(0.1)
    try:
        with _connect(server) as extra:
            assert _closed_within(extra, 2) < 0.5
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert b"200 OK" in _get(server)  # room again once they are gone


def test_one_client_cannot_take_every_connection(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 32: 256 slow uploads from one client locked everyone out. A client holds at
    most its share (here 2 of 4; LUNGSEG_MAX_PER_CLIENT); another address still gets in."""
    # the fixture's server reads its settings per connection: 2 per client from now on
    monkeypatch.setenv("LUNGSEG_MAX_PER_CLIENT", "2")
    held = [_connect(server) for _ in range(2)]
    time.sleep(0.1)
    try:
        with _connect(server) as third:  # the same client (127.0.0.1): over its share
            assert _closed_within(third, 2) < 0.5
        other = socket.socket()
        other.bind(("127.0.0.2", 0))  # another client on the loopback network
        other.settimeout(5)
        other.connect(("127.0.0.1", server))
        with other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := other.recv(4096):
                answer += chunk
        assert b"200 OK" in answer
    finally:
        for sock in held:
            sock.close()
