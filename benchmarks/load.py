"""Load on the web API: 8 concurrent clients posting real 512x512 slices.

Starts `lungseg serve` on 127.0.0.1 (a free port), waits for /healthz, lets the
clients post finding-lungs TIFF slices to /api/v1/segment until the request or
time bound is reached, stops the server, and prints requests per second, p50 and
p99 latency and errors.

    .venv/bin/python benchmarks/load.py [--clients 8] [--requests 400] [--seconds 60] [--workers 2] [--format json]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _wait_healthy(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="stop after this many requests")
    parser.add_argument("--seconds", type=float, default=60.0, help="or after this long")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--format", default="json", choices=["json", "mask", "overlay"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-infection", action="store_true", help="serve lungs only")
    args = parser.parse_args()
    slices = sorted((args.data / "finding-lungs-ct" / "2d_images").glob("*.tif"))[:32]
    if not slices:
        raise SystemExit(f"needs the real data in {args.data}")
    bodies = [_multipart(p.name, p.read_bytes()) for p in slices]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threads = max(1, (os.cpu_count() or 2) // args.workers)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lungseg",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--threads",
            str(threads),
            *(["--no-infection"] if args.no_infection else []),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(port, 120)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        issued = 0
        stop_at = time.monotonic() + args.seconds

        def client(index: int) -> None:
            nonlocal issued
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            k = index
            while time.monotonic() < stop_at:
                with lock:
                    if issued >= args.requests:
                        return
                    issued += 1
                body, content_type = bodies[k % len(bodies)]
                k += args.clients
                started = time.perf_counter()
                try:
                    connection.request(
                        "POST",
                        f"/api/v1/segment?format={args.format}",
                        body,
                        {"Content-Type": content_type},
                    )
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except OSError as error:
                    ok = False
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    response = None
                    with lock:
                        errors.append(str(error))
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if not ok and response is not None:
                        errors.append(f"HTTP {response.status}")

        started = time.perf_counter()
        pool = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{args.clients} clients, {args.workers} server workers x {threads} onnxruntime threads, format={args.format}, "
        f"{'lungs only' if args.no_infection else 'lungs + infection'}, 512x512 finding-lungs TIFF slices"
    )
    print(f"requests {len(latencies)} in {wall:.1f} s: {len(latencies) / wall:.1f} requests/s")
    print(
        f"latency p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, errors {len(errors)}"
    )
    for error in errors[:5]:
        print("  error:", error)


if __name__ == "__main__":
    main()
