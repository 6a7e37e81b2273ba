"""The download code against a local HTTP server that serves files the test makes."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lungseg.cli import main
from lungseg.dataset.download import RemoteFile, download_dataset, fetch
from lungseg.errors import DownloadError


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    drop_first: set[str]  # names whose first request is cut half-way
    ranges: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header:
            self.server.ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in self.server.drop_first:
            self.server.drop_first.discard(name)
            self.wfile.write(body[start : start + len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-file
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.drop_first, httpd.ranges = {}, set(), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/files/"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_checks_and_unpacks(tmp_path: Path, server: _Server) -> None:
    images = _zip({"COVID-19-CT-Seg_20cases/coronacases_001.nii.gz": b"volume" * 1000})
    masks = _zip({"coronacases_001.nii.gz": b"mask" * 100, "__MACOSX/._x": b"junk"})
    server.files = {"COVID-19-CT-Seg_20cases.zip": images, "Lung_Mask.zip": masks}
    files = (
        RemoteFile("COVID-19-CT-Seg_20cases.zip", _sha(images)),
        RemoteFile("Lung_Mask.zip", _sha(masks)),
    )
    out = download_dataset("covid19-ct-seg", tmp_path / "covid", base_url=_url(server), files=files)
    assert (
        out / "COVID-19-CT-Seg_20cases" / "coronacases_001.nii.gz"
    ).read_bytes() == b"volume" * 1000
    assert [p.name for p in (out / "Lung_Mask").iterdir()] == ["coronacases_001.nii.gz"]
    # A second run finds everything in place and downloads nothing.
    server.files = {}
    download_dataset("covid19-ct-seg", tmp_path / "covid", base_url=_url(server), files=files)


def test_wrong_checksum_deletes_the_file_and_says_so(tmp_path: Path, server: _Server) -> None:
    server.files = {"Lung_Mask.zip": b"tampered"}
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(_url(server) + "Lung_Mask.zip", tmp_path / "Lung_Mask.zip", _sha(b"original"))
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_is_resumed_with_a_range_request(
    tmp_path: Path, server: _Server
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    server.files = {"big.zip": data}
    server.drop_first = {"big.zip"}
    target = fetch(_url(server) + "big.zip", tmp_path / "big.zip", _sha(data))
    assert target.read_bytes() == data
    assert server.ranges and server.ranges[0].startswith("bytes=")
    assert not (tmp_path / "big.zip.part").exists()


def test_missing_file_is_a_clear_error(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(_url(server) + "nothing.zip", tmp_path / "nothing.zip", _sha(b""))


def test_cli_reports_download_failure(tmp_path: Path, server: _Server, capsys) -> None:
    server.files = {"COVID-19-CT-Seg_20cases.zip": b"not the real archive"}
    code = main(
        [
            "dataset",
            "download",
            "covid19-ct-seg",
            "--out",
            str(tmp_path),
            "--base-url",
            _url(server),
        ]
    )
    assert code == 2
    assert "checksum mismatch" in capsys.readouterr().err
