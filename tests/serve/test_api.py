from __future__ import annotations

import base64
import io
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from models import dark_is_lung_onnx
from PIL import Image
from synthetic import (
    LPS_AFFINE,
    ct_slice,
    ct_volume,
    display_slice,
    write_dicom_series,
    write_dicom_slice,
    write_nifti,
    write_tiff_hu,
)

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.inference import Predictor
from lungseg.serve.app import ServeSettings, create_app
from lungseg.serve.schemas import VolumeAnswer


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor(dark_is_lung_onnx(tmp_path_factory.mktemp("model") / "model.onnx"))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    return TestClient(create_app(ServeSettings(max_slice_mb=2.0, max_volume_mb=8.0), predictor))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(text: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(text))))


def test_health_model_page_and_schema(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/api/v1/model").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "lungseg" in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/segment", "/api/v1/segment-volume", "/healthz", "/api/v1/model"} <= set(paths)
    # the response bodies are in the schema: a client generator sees the real fields
    schema = client.get("/openapi.json").json()
    for path, answer in (
        ("/api/v1/segment", "SliceAnswer"),
        ("/api/v1/segment-volume", "VolumeAnswer"),
    ):
        ok = paths[path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{answer}"}
        fields = schema["components"]["schemas"][answer]["properties"]
        assert {
            "lung",
            "notes",
            "involvement",
            "model",
            "mask_png" if answer == "SliceAnswer" else "slices",
        } <= set(fields)
    assert "413" in paths["/api/v1/segment"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_segment_png_returns_measures_and_pictures(client: TestClient) -> None:
    hu, lungs = ct_slice(64)
    response = client.post(
        "/api/v1/segment", files={"file": ("slice.png", png(display_slice(hu)), "image/png")}
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["size"] == [64, 64] and data["kind"] == "slice"
    mask = decode_png(data["mask_png"])
    np.testing.assert_array_equal(mask == LUNG_RIGHT, lungs == 1)
    np.testing.assert_array_equal(mask == LUNG_LEFT, lungs == 2)
    assert data["lung"]["unit"] == "px" and data["lung"]["total"] == (lungs > 0).sum()
    assert decode_png(data["overlay_png"]).shape == (64, 64, 3)
    assert decode_png(data["image_png"]).shape == (64, 64)
    assert data["timings_ms"]["total"] > 0 and "name" in data["model"]


def test_the_page_draws_with_the_colours_every_output_uses(client: TestClient) -> None:
    """One colour table: what /api/v1/colours sends the page is what the mask PNGs'
    palettes and the overlays use."""
    from lungseg.visualize import INFECTION_COLOURS, LUNG_COLOURS

    table = client.get("/api/v1/colours").json()
    assert table["lung"]["1"] == {"name": "right lung", "rgb": list(LUNG_COLOURS[LUNG_RIGHT])}
    assert table["lung"]["2"]["name"] == "left lung"
    assert {int(k): tuple(v["rgb"]) for k, v in table["infection"].items()} == INFECTION_COLOURS
    hu, _ = ct_slice(64)
    data = client.post(
        "/api/v1/segment", files={"file": ("slice.png", png(display_slice(hu)), "image/png")}
    ).json()
    mask = Image.open(io.BytesIO(base64.b64decode(data["mask_png"])))
    palette = mask.getpalette()
    assert palette is not None
    for label, entry in table["lung"].items():
        assert palette[3 * int(label) : 3 * int(label) + 3] == entry["rgb"]
    page = client.get("/static/app.js").text
    assert "/api/v1/colours" in page and "230, 75, 60" not in page  # no table of its own


@pytest.mark.parametrize("answer", ["mask", "overlay"])
def test_segment_can_answer_a_png(client: TestClient, answer: str) -> None:
    hu, _ = ct_slice(64)
    response = client.post(
        f"/api/v1/segment?format={answer}", files={"file": ("s.png", png(display_slice(hu)))}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    picture = np.array(Image.open(io.BytesIO(response.content)))
    assert picture.shape[:2] == (64, 64)


def test_segment_tiff_jpeg_and_dicom(client: TestClient, tmp_path: Path) -> None:
    hu, _ = ct_slice(64)
    jpeg = io.BytesIO()
    Image.fromarray(display_slice(hu)).convert("RGB").save(jpeg, format="JPEG", quality=90)
    uploads = {
        "slice.tif": write_tiff_hu(tmp_path / "s.tif", hu).read_bytes(),
        "slice.jpg": jpeg.getvalue(),
        "slice.dcm": write_dicom_slice(tmp_path / "s.dcm", hu, pixel=(0.7, 0.7)).read_bytes(),
    }
    for name, data in uploads.items():
        response = client.post("/api/v1/segment", files={"file": (name, data)})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["lung"]["total"] > 0
    assert (
        client.post("/api/v1/segment", files={"file": ("slice.dcm", uploads["slice.dcm"])}).json()[
            "lung"
        ]["unit"]
        == "mm2"
    )


def test_segment_volume_nifti_and_dicom_zip(client: TestClient, tmp_path: Path) -> None:
    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    nifti = write_nifti(tmp_path / "scan.nii.gz", hu).read_bytes()
    response = client.post("/api/v1/segment-volume", files={"file": ("scan.nii.gz", nifti)})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["size"] == [6, 64, 64] and len(data["slices"]) == 6
    assert data["lung"]["unit"] == "mL"
    assert data["lung"]["total"] == pytest.approx(
        (lungs > 0).sum() * 0.8 * 0.8 * 5.0 / 1000.0, abs=0.01
    )
    mask = nib.Nifti1Image.from_bytes(
        __import__("gzip").decompress(base64.b64decode(data["mask_nifti"]))
    )
    np.testing.assert_allclose(mask.affine, LPS_AFFINE)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in write_dicom_series(tmp_path / "series", hu):
            bundle.write(path, f"series/{path.name}")
    response = client.post(
        "/api/v1/segment-volume?format=nifti", files={"file": ("series.zip", buffer.getvalue())}
    )
    assert response.status_code == 200
    assert response.content[:2] == b"\x1f\x8b"
    seg = client.post(
        "/api/v1/segment-volume?format=seg", files={"file": ("series.zip", buffer.getvalue())}
    )
    assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(seg.content)).Modality == "SEG"
    refused = client.post(
        "/api/v1/segment-volume?format=seg", files={"file": ("scan.nii.gz", nifti)}
    )
    assert refused.status_code == 400 and "DICOM series" in refused.json()["error"]
    answer = client.post(
        "/api/v1/segment-volume", files={"file": ("series.zip", buffer.getvalue())}
    )
    places = VolumeAnswer.model_validate(answer.json()).lung.per_slice
    assert places is not None
    # head to feet: number 1 is the top slice, which the series numbers instance 1 too
    assert [(p.number, p.instance, p.z_mm) for p in places] == [
        (6 - k, 6 - k, 5.0 * k) for k in range(6)
    ]


@pytest.mark.parametrize(
    ("endpoint", "name", "content", "status", "words"),
    [
        ("segment", "empty.png", b"", 400, "empty"),
        ("segment", "junk.png", b"this is not an image", 400, "not a valid .png"),
        ("segment", "junk.bin", b"\x00\x01 nothing known", 400, "unknown file type"),
        (
            "segment",
            "cut.png",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
            400,
            "cut.png: not a readable image (corrupt, truncated",
        ),
        ("segment", "scan.nii.gz", b"\x1f\x8b", 400, "segment-volume"),
        ("segment-volume", "slice.png", b"\x89PNG", 415, ".nii"),
        ("segment-volume", "series.zip", b"PK\x03\x04 broken zip", 400, "zip"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    client: TestClient, endpoint: str, name: str, content: bytes, status: int, words: str
) -> None:
    response = client.post(f"/api/v1/{endpoint}", files={"file": (name, content)})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_size_limits_and_decompression_bombs(client: TestClient) -> None:
    big = np.random.default_rng(0).integers(0, 255, (1600, 1600), dtype=np.uint8)  # ~2.5 MB as PNG
    response = client.post("/api/v1/segment", files={"file": ("big.png", png(big))})
    assert response.status_code == 413
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")
    response = client.post("/api/v1/segment", files={"file": ("bomb.png", bomb.getvalue())})
    assert response.status_code == 413, response.text
    assert "limit of 67108864 pixels per slice" in response.json()["error"]


def test_a_volume_sent_as_slice_and_4d_volumes(client: TestClient, tmp_path: Path) -> None:
    hu, _ = ct_volume(slices=4, size=32, lung_free=1)
    data = np.transpose(hu, (2, 1, 0))
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), LPS_AFFINE), str(tmp_path / "4d.nii"))
    response = client.post(
        "/api/v1/segment-volume", files={"file": ("4d.nii", (tmp_path / "4d.nii").read_bytes())}
    )
    assert response.status_code == 400 and "4D" in response.json()["error"]
    multipage = io.BytesIO()
    frames = [Image.fromarray(display_slice(p)) for p in hu]
    frames[0].save(multipage, format="TIFF", save_all=True, append_images=frames[1:])
    response = client.post("/api/v1/segment", files={"file": ("stack.tif", multipage.getvalue())})
    assert response.status_code == 400 and "segment-volume" in response.json()["error"]


def test_a_volume_sent_to_the_slice_endpoint_is_refused_before_it_is_segmented(
    client: TestClient, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 32: the wrong endpoint is told from the file read, not after the work."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a volume sent as a slice was segmented")

    monkeypatch.setattr(predictor, "segment", never)
    multipage = io.BytesIO()
    hu, _ = ct_volume(slices=4, size=32, lung_free=1)
    frames = [Image.fromarray(display_slice(p)) for p in hu]
    frames[0].save(multipage, format="TIFF", save_all=True, append_images=frames[1:])
    response = client.post("/api/v1/segment", files={"file": ("stack.tif", multipage.getvalue())})
    assert response.status_code == 400 and "segment-volume" in response.json()["error"]


def test_concurrent_requests_each_get_their_own_answer(client: TestClient) -> None:
    slices = [ct_slice(64, lung_scale=0.6 + 0.05 * i, seed=i) for i in range(12)]

    def post(item: tuple[np.ndarray, np.ndarray]) -> tuple[int, float, int]:
        hu, lungs = item
        response = client.post("/api/v1/segment", files={"file": ("s.png", png(display_slice(hu)))})
        return response.status_code, response.json()["lung"]["total"], int((lungs > 0).sum())

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(post, slices))
    assert all(status == 200 for status, _, _ in results)
    assert [total for _, total, _ in results] == [expected for _, _, expected in results]
    leftovers = list(Path(tempfile.gettempdir()).glob("lungseg-upload-*"))
    assert leftovers == []


def test_odd_names_and_picture_stacks_are_4xx_not_500(client: TestClient) -> None:
    """Found by attacking the API: a 300-character suffix, and a multi-page TIFF named
    .nii sent as a scan (no patient geometry to write a NIfTI with), were 500s."""
    hu, _ = ct_slice(64)
    long_name = client.post(
        "/api/v1/segment", files={"file": ("x." + "a" * 300, png(display_slice(hu)))}
    )
    assert long_name.status_code == 200  # the type comes from the bytes
    frames = [Image.fromarray(display_slice(ct_slice(64, seed=i)[0])) for i in range(3)]
    stack = io.BytesIO()
    frames[0].save(stack, format="TIFF", save_all=True, append_images=frames[1:])
    for name in ("stack.nii", "stack.nii.gz"):
        response = client.post("/api/v1/segment-volume", files={"file": (name, stack.getvalue())})
        assert (
            response.status_code == 400 and "without patient geometry" in response.json()["error"]
        )


def test_a_declared_size_over_the_limit_is_refused_before_reading(client: TestClient) -> None:
    response = client.post(
        "/api/v1/segment",
        content=b"x" * 16,
        headers={"Content-Length": str(50 * 1024 * 1024), "Content-Type": "multipart/form-data"},
    )
    assert response.status_code == 413 and "larger than 2 MB" in response.json()["error"]
