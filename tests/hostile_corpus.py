"""A corpus of hostile and odd inputs, written by a script (never committed as files).

Each ``Case`` is one input as an attacker or an unlucky user would send it, with
what lungseg must do: ``ok`` (odd but valid: a correct result, maybe with a note)
or ``refused`` (a clear 4xx from the API, a one-line error from the CLI). The test
``tests/serve/test_hostile.py`` runs the small corpus through the CLI and the API;
``benchmarks/hostile.py`` runs it (with ``large=True``: the bombs that take
seconds to write) against a real server and measures its memory and ``/healthz``.

    .venv/bin/python tests/hostile_corpus.py OUT [--large]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian
from synthetic import (
    LPS_AFFINE,
    ct_slice,
    ct_volume,
    display_slice,
    write_dicom_series,
    write_dicom_slice,
    write_nifti,
    write_png,
    zip_files,
)


@dataclass
class Case:
    """One hostile input.

    Attributes:
        name: what it is, in a few words.
        cause: the kind of attack (size, decoder, name, valid-odd...).
        path: the file or DICOM folder on disk (the CLI's input); ``None``: API only.
        upload: the bytes' file the API gets (a zip for a folder).
        upload_name: the file name the API is told.
        endpoint: ``segment`` or ``segment-volume``.
        expect: ``ok`` or ``refused``.
        cli_expect: where the CLI differs (it reads by content and accepts picture
            stacks, which the API's scan endpoint refuses); else ``expect``.
    """

    name: str
    cause: str
    path: str | None
    upload: str
    upload_name: str
    endpoint: str
    expect: str
    cli_expect: str | None = None

    @property
    def expect_from_cli(self) -> str:
        return self.cli_expect or self.expect


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip_folder(folder: Path, target: Path, names: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted(folder.iterdir()):
            bundle.write(file, (names or {}).get(file.name, file.name))
    return target


def build(out: Path, *, large: bool = False) -> list[Case]:
    """Write the corpus into ``out``; returns its cases (also saved as ``cases.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(
        name: str,
        cause: str,
        path: Path | None,
        expect: str,
        *,
        upload: Path | None = None,
        upload_name: str | None = None,
        endpoint: str | None = None,
        cli_expect: str | None = None,
    ) -> None:
        sent = upload or path
        assert sent is not None
        volume_suffix = sent.name.endswith((".nii", ".nii.gz", ".zip"))
        cases.append(
            Case(
                name,
                cause,
                str(path) if path is not None else None,
                str(sent),
                upload_name or sent.name,
                endpoint or ("segment-volume" if volume_suffix else "segment"),
                expect,
                cli_expect,
            )
        )

    hu, _ = ct_slice(128)
    volume, _ = ct_volume(slices=8, size=96, lung_free=1)

    # --- size: limits checked from headers, before allocating -----------------
    dicom = write_dicom_slice(out / "huge_rows.dcm", np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(dicom)
    ds.Rows = ds.Columns = 40000
    ds.save_as(dicom)
    add("DICOM declaring 40000 x 40000 pixels", "size", dicom, "refused")

    frames = write_dicom_slice(out / "many_frames.dcm", np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(frames)
    ds.NumberOfFrames = 5_000_000
    ds.save_as(frames)
    add("DICOM declaring 5 million frames", "size", frames, "refused")

    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 1000))
    header.set_data_dtype(np.int16)
    bare = out / "header_only.nii"
    bare.write_bytes(header.binaryblock + b"\0" * 4)
    add("352-byte NIfTI header declaring 16 G voxels", "size", bare, "refused")

    long_scan = out / "long.nii.gz"
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 2000))
    header.set_data_dtype(np.uint8)
    with gzip.open(long_scan, "wb") as handle:  # 0.5 GB of zeros declared, sent gzipped
        handle.write(header.binaryblock + b"\0" * 4)
        handle.write(b"\0" * (1 << 20))
    add("gzip NIfTI declaring 2000 slices", "size", long_scan, "refused")

    cut = write_nifti(out / "truncated.nii", volume)
    cut.write_bytes(cut.read_bytes()[:20000])
    add("truncated NIfTI", "decoder", cut, "refused")

    bomb = out / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    add("PNG decompression bomb (81 Mpx)", "size", bomb, "refused")
    declared = out / "declares_40000.png"  # 2.5 kB saying 40000 x 40000: Pillow's own error

    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    declared.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(bytes(2500)))
        + png_chunk(b"IEND", b"")
    )
    add("PNG declaring 40000 x 40000 (1.6 Gpx)", "size", declared, "refused")

    pages = [Image.fromarray(np.full((2, 2), i % 256, np.uint8)) for i in range(2000)]
    tiff = out / "pages.tif"
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    add("TIFF of 2000 pages of 2 x 2 pixels", "size", tiff, "refused")

    zip_bomb = out / "zip_bomb.zip"
    with zipfile.ZipFile(zip_bomb, "w") as bundle:
        bundle.writestr(zipfile.ZipInfo("a.dcm"), b"x")
        bundle.writestr(zipfile.ZipInfo("b.dcm"), b"x")
    data = bytearray(zip_bomb.read_bytes())
    # each central directory entry declares 4 GB unpacked (the local headers say 1 byte)
    entry = data.find(b"PK\x01\x02")
    while entry >= 0:
        data[entry + 24 : entry + 28] = struct.pack("<I", 0xFFFFFFF0)
        entry = data.find(b"PK\x01\x02", entry + 4)
    zip_bomb.write_bytes(bytes(data))
    add("zip declaring 8 GB unpacked", "size", zip_bomb, "refused")

    zeros = out / "zeros.zip"  # issue 32: every member was unpacked and forced through pydicom
    with zipfile.ZipFile(zeros, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for index in range(4):
            bundle.writestr(f"{index:04d}.dcm", bytes(16 * 1024 * 1024))
    add("zip of 64 MB of zeros named .dcm", "size", zeros, "refused")

    small, _ = ct_volume(slices=4, size=48, lung_free=1)
    beside = write_dicom_series(out / "beside_series", small)
    extra = {"zeros.bin": bytes(8 * 1024 * 1024), "README.txt": b"exported by a PACS"}
    junk = zip_files(out / "series_and_junk.zip", beside, folder="series", extra=extra)
    add("zipped series with zeros and a README beside it", "valid-odd", junk, "ok")

    if large:
        deflated = write_dicom_slice(out / "deflate_bomb.dcm", np.zeros((8, 8), np.int16))
        ds = pydicom.dcmread(deflated)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(deflated, enforce_file_format=True)
        raw = deflated.read_bytes()
        (group_length,) = struct.unpack("<I", raw[140:144])
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = b"\0" * (1 << 24)
        body = b"".join(packer.compress(zeros) for _ in range(80)) + packer.flush()
        deflated.write_bytes(raw[: 144 + group_length] + body)  # inflates to 1.3 GB
        add("deflated DICOM inflating to 1.3 GB", "size", deflated, "refused")

        tiny = out / "tiny_series"
        write_dicom_series(tiny, np.zeros((1500, 2, 2), np.int16))
        add(
            "DICOM series of 1500 slices of 2 x 2",
            "size",
            tiny,
            "refused",
            upload=_zip_folder(tiny, out / "tiny_series.zip"),
        )

    # --- decoders: corrupt, truncated, mislabelled --------------------------------
    empty = out / "empty.png"
    empty.write_bytes(b"")
    add("empty file", "decoder", empty, "refused")
    cut_png = out / "cut.png"
    cut_png.write_bytes(_png_bytes(display_slice(hu))[:300])
    add("truncated PNG", "decoder", cut_png, "refused")
    noise = out / "noise.dcm"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    add("random bytes named .dcm", "decoder", noise, "refused")
    fake_jpeg = out / "fake.jpg"
    fake_jpeg.write_bytes(b"\xff\xd8\xffnot really a JPEG")
    add("JPEG magic then garbage", "decoder", fake_jpeg, "refused")
    stack = out / "stack.nii"
    frames_list = [Image.fromarray(display_slice(p)) for p in volume]
    frames_list[0].save(stack, format="TIFF", save_all=True, append_images=frames_list[1:])
    add("multi-page TIFF named .nii", "decoder", stack, "refused", cli_expect="ok")
    gif = out / "animation.nii"
    frames_list[0].save(gif, format="GIF", save_all=True, append_images=frames_list[1:])
    add("GIF named .nii", "decoder", gif, "refused", cli_expect="ok")
    text = out / "notes.png"
    text.write_text("a radiology report, not an image\n")
    add("text named .png", "decoder", text, "refused")
    four_d = out / "four_d.nii"
    data4 = np.transpose(volume, (2, 1, 0))
    nib.save(nib.Nifti1Image(np.stack([data4, data4], -1), LPS_AFFINE), four_d)
    add("4D NIfTI", "decoder", four_d, "refused")
    pictures = out / "pictures"
    pictures.mkdir(exist_ok=True)
    for index, plane in enumerate(volume[:3]):
        write_png(pictures / f"{index}.png", display_slice(plane))
    add(
        "zip of PNG pictures sent as a scan",
        "decoder",
        _zip_folder(pictures, out / "pictures.zip"),
        "refused",
    )
    broken_zip = out / "broken.zip"
    broken_zip.write_bytes(b"PK\x03\x04 a zip cut short")
    add("broken zip", "decoder", broken_zip, "refused")

    # --- names ------------------------------------------------------------------
    slice_png = write_png(out / "slice.png", display_slice(hu))
    add("300-character suffix", "name", None, "ok", upload=slice_png, upload_name="a." + "x" * 300)
    add("NUL in the file name", "name", None, "ok", upload=slice_png, upload_name="a\x00b.png")
    add("path in the file name", "name", None, "ok", upload=slice_png, upload_name="../../x.png")
    traversal = out / "traversal"
    write_dicom_series(traversal, volume)
    names = {p.name: f"../../evil/{p.name}" for p in traversal.iterdir()}
    add(
        "zip of a series with ../ member names",
        "name",
        _zip_folder(traversal, out / "traversal.zip", names),
        "ok",
    )

    # --- odd but valid; a picture of one value holds no body: refused -------------
    for name, array, expect in (
        ("all-black PNG", np.zeros((64, 64), np.uint8), "refused"),
        ("uniform grey PNG", np.full((64, 64), 128, np.uint8), "refused"),
        ("16-bit all-zero PNG", np.zeros((64, 64), np.uint16), "refused"),
        ("1 x 1 PNG", np.zeros((1, 1), np.uint8), "refused"),
        ("3 x 1000 PNG", np.zeros((3, 1000), np.uint8), "refused"),
        ("16-bit CT PNG (HU + 1024)", (hu.astype(np.int32) + 1024).astype(np.uint16), "ok"),
        ("RGB PNG", np.stack([display_slice(hu)] * 3, -1), "ok"),
    ):
        path = out / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".png")
        Image.fromarray(array).save(path)
        add(name, "valid-odd", path, expect)
    if large:  # 12 s to segment on 2 cores
        big = out / "big_8000.png"
        Image.fromarray(np.zeros((8000, 8000), np.uint8)).save(big)
        add("8000 x 8000 PNG (64 Mpx, within the limit)", "valid-odd", big, "refused")
    blank_one = volume.copy()
    blank_one[3] = -1000
    add(
        "volume with one blank slice",
        "valid-odd",
        write_nifti(out / "one_blank.nii.gz", blank_one),
        "ok",
    )
    no_spacing = out / "no_spacing.nii"
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), np.eye(4)), no_spacing)
    add("NIfTI without voxel sizes", "valid-odd", no_spacing, "ok")
    series = out / "series"
    write_dicom_series(series, volume)
    add(
        "DICOM series (zip)",
        "valid-odd",
        series,
        "ok",
        upload=_zip_folder(series, out / "series.zip"),
    )

    (out / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the hostile corpus")
    parser.add_argument("out", type=Path)
    parser.add_argument("--large", action="store_true", help="also the bombs that take seconds")
    args = parser.parse_args()
    written = build(args.out, large=args.large)
    print(f"{len(written)} cases in {args.out} (cases.json lists them)")
