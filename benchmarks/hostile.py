"""Hostile input against a real server: every case of the corpus, memory, /healthz, hang-ups.

Writes the hostile corpus (``tests/hostile_corpus.py`` with its large bombs), starts
`lungseg serve` (one worker, the shipped models) on a free port and:

1. posts every case and prints one line each: expected, HTTP status, the server's
   peak memory during that request (VmHWM, reset before each), the answer;
2. posts the largest scan the default limits accept (512 x 512 x 1024 slices, the
   real DICOM series repeated, gzip NIfTI) and prints the server's peak memory;
3. runs 8 clients posting real slices and one posting the 64-slice series while
   /healthz is probed every 50 ms, and prints the probes' p50/p99;
4. posts the large scan, hangs up after 3 s, and prints how long the server went on
   using the CPU;
5. runs the corpus through `lungseg predict` and prints one line per case.

    .venv/bin/python benchmarks/hostile.py [--skip-largest]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))

from hostile_corpus import Case, build  # noqa: E402

from lungseg.imaging import read_image  # noqa: E402


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _post(
    port: int, endpoint: str, name: str, data: bytes, timeout: float = 600
) -> tuple[int, str]:
    body, content_type = _multipart(name, data)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", f"/api/v1/{endpoint}", body, {"Content-Type": content_type})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, text
    except OSError as error:
        return 0, f"connection error: {error}"
    finally:
        connection.close()


def _peak_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (peak resident memory)


def _peak_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime in clock ticks


def _answer(text: str) -> str:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:90]
    if "error" in parsed:
        return str(parsed["error"])[:90]
    lung = parsed.get("lung", {})
    return f"{parsed.get('kind')} lungs {lung.get('total')} {lung.get('unit')}; notes {len(parsed.get('notes', []))}"


def _largest_scan(folder: Path) -> Path:
    """512 x 512 x 1024: the largest scan the default limits accept, as gzip NIfTI."""
    series = DATA / "chest-ct-dicom" / "Lung_Dx-A0001"
    if series.is_dir():
        planes = read_image(series).array
    else:
        from synthetic import ct_volume

        planes = np.repeat(ct_volume(slices=16, size=64, lung_free=2)[0], 8, axis=1).repeat(8, 2)
    repeats = -(-1024 // planes.shape[0])
    volume = np.concatenate([planes] * repeats)[:1024]
    path = folder / "largest_1024.nii.gz"
    affine = np.diag([-0.8, -0.8, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))), affine), path)
    return path


def _serve(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "lungseg", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its access log; a failure shows as the HTTP status
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become healthy")


def _run_cases(port: int, pid: int, cases: list[Case]) -> int:
    print(f"{'case':44} {'expect':8} {'HTTP':>4} {'peak GB':>7}  answer")
    missed = 0
    for case in cases:
        _peak_reset(pid)
        status, text = _post(port, case.endpoint, case.upload_name, Path(case.upload).read_bytes())
        good = status == 200 if case.expect == "ok" else 400 <= status < 500
        missed += not good
        mark = "" if good else "  <-- NOT HANDLED"
        print(
            f"{case.name[:44]:44} {case.expect:8} {status:4d} {_peak_gb(pid):7.2f}  {_answer(text)}{mark}"
        )
    return missed


def _health_under_load(port: int, scan: bytes, slices: list[tuple[str, bytes]]) -> None:
    stop = threading.Event()
    probes: list[float] = []
    statuses: list[int] = []

    def poster(index: int) -> None:
        k = index
        while not stop.is_set():
            name, data = slices[k % len(slices)]
            k += 8
            status, _ = _post(port, "segment", name, data)
            statuses.append(status)

    def prober() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            connection.close()
            probes.append(time.perf_counter() - started)
            time.sleep(0.05)

    threads = [threading.Thread(target=poster, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=prober))
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    status, _ = _post(port, "segment-volume", "series.zip", scan)
    scan_s = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    ordered = sorted(probes)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"8 clients posting slices + 1 scan ({status}, {scan_s:.1f} s): /healthz {len(probes)} "
        f"probes, p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms; slice answers {sorted(set(statuses))}"
    )


def _hang_up(port: int, pid: int, data: bytes) -> None:
    body, content_type = _multipart("largest.nii.gz", data)
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /api/v1/segment-volume HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    time.sleep(3.0)
    sock.close()
    hung_up = time.perf_counter()
    last, idle_since = _cpu_s(pid), None
    while time.perf_counter() - hung_up < 120:
        time.sleep(0.5)
        now = _cpu_s(pid)
        if now - last < 0.05:  # under 10 % of a core for half a second: the job stopped
            idle_since = time.perf_counter()
            break
        last = now
    busy = (idle_since or time.perf_counter()) - hung_up
    print(
        f"client hung up 3 s into the largest scan: the server stopped working {busy:.1f} s later"
    )


def _cli(cases: list[Case], out: Path) -> int:
    chosen = [c for c in cases if c.path is not None]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungseg",
            "predict",
            *(c.path for c in chosen),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    records = [json.loads(line) for line in run.stdout.splitlines()]
    missed = 0
    print(f"\nlungseg predict over {len(chosen)} cases: exit code {run.returncode}")
    for case, record in zip(chosen, records, strict=False):
        refused = "error" in record or record.get("check", {}).get("status") == "refused"
        good = refused == (case.expect_from_cli == "refused")
        missed += not good
        said = (
            record.get("error")
            or (refused and "refused: " + record["check"]["reasons"][0])
            or f"{record['kind']} lungs {record['lung']['total']} {record['lung']['unit']}"
        )
        print(
            f"  {case.name[:44]:44} {case.expect_from_cli:8} {str(said)[:90]}{'' if good else '  <-- NOT HANDLED'}"
        )
    missed += abs(len(records) - len(chosen))
    if "Traceback" in run.stderr:
        missed += 1
        print("  a traceback on stderr")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skip-largest", action="store_true", help="skip steps 2 and 4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        cases = build(folder / "corpus", large=True)
        print(f"corpus: {len(cases)} cases written in {time.perf_counter() - started:.0f} s")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = _serve(port)
        try:
            missed = _run_cases(port, server.pid, cases)
            print(f"API: {len(cases) - missed} of {len(cases)} cases handled")
            largest = None
            if not args.skip_largest:
                largest = _largest_scan(folder).read_bytes()
                _peak_reset(server.pid)
                started = time.perf_counter()
                status, text = _post(port, "segment-volume", "largest_1024.nii.gz", largest)
                print(
                    f"largest accepted scan (512 x 512 x 1024, {len(largest) / 2**20:.0f} MB "
                    f"gzip NIfTI): HTTP {status} in {time.perf_counter() - started:.0f} s, "
                    f"server peak memory {_peak_gb(server.pid):.2f} GB; {_answer(text)}"
                )
            series = DATA / "chest-ct-dicom" / "Lung_Dx-A0001"
            tiffs = sorted((DATA / "finding-lungs-ct" / "2d_images").glob("*.tif"))[:16]
            if series.is_dir() and tiffs:
                bundle = io.BytesIO()
                with zipfile.ZipFile(bundle, "w") as archive:
                    for file in sorted(series.iterdir()):
                        archive.write(file, file.name)
                _health_under_load(
                    port, bundle.getvalue(), [(t.name, t.read_bytes()) for t in tiffs]
                )
            else:
                print(f"/healthz under load skipped: needs the real data in {DATA}")
            if largest is not None:
                _hang_up(port, server.pid, largest)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        missed_cli = _cli(cases, folder / "out")
        print(
            f"CLI: {sum(c.path is not None for c in cases) - missed_cli} of {sum(c.path is not None for c in cases)} cases handled"
        )


if __name__ == "__main__":
    main()
