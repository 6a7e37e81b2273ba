"""The files a prediction is written as, and their bytes (the web API sends the same
bytes); each file is written aside and renamed, never half-written.

Slice: ``<stem>_mask.png`` (8-bit palette PNG, the input's size: 0 background,
1 right lung, 2 left lung) and ``<stem>_overlay.png`` (the image with the right
lung in red and the left in blue, semi-transparent, outlined). Volume:
``<stem>_mask.nii.gz`` (the input's geometry), for a DICOM series also
``<stem>_seg.dcm`` (a DICOM Segmentation over the series), and
``<stem>_overlay.png`` (a montage of representative slices).
"""

from __future__ import annotations

import copy
import io
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib
from PIL import Image

from lungseg import __version__
from lungseg.core.scratch import process_running
from lungseg.imaging import to_display
from lungseg.imaging.orientation import from_display_order, to_source_grid, to_stored_order
from lungseg.inference.result import Prediction, Summary
from lungseg.visualize import INFECTION_COLOURS, LUNG_COLOURS, annotate, overlay
from lungseg.visualize import montage as visual_montage

MONTAGE_SLICES = 8
MONTAGE_TILE = 256


PARTIAL = ".partial-"


def sweep_partials(out: Path) -> list[Path]:
    """Remove half-written files that a killed ``lungseg predict`` left in ``out``
    (``.<name>.partial-<pid>`` of a process that no longer runs)."""
    removed: list[Path] = []
    if not out.is_dir():
        return removed
    for path in out.glob(f".*{PARTIAL}*"):
        pid = path.name.rsplit(PARTIAL, 1)[-1]
        if pid.isdigit() and not process_running(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _write_atomically(path: Path, data: bytes) -> Path:
    """``data`` written aside, then renamed to ``path``: a write that fails (a full disk)
    leaves neither a half file under the output's name nor the partial one."""
    partial = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


PNG_COLOUR_TYPES = {2: 0, 3: 2}  # array dimensions -> PNG colour type: grey, RGB
PNG_PALETTE = 3
DEFLATE_LEVEL = 2
"""ISA-L's deflate level (0-3) for PNGs and gzipped NIfTI: a 512x512 overlay in about a
quarter of zlib level 1's time for a file about a fifth larger
(``benchmarks/picture_time.py``); a label volume in a fiftieth of gzip level 6's time
for a file under twice as large."""


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of an 8-bit grey ``(rows, cols)`` or RGB ``(rows, cols, 3)`` array.

    Written here rather than by Pillow: every row unfiltered, deflated by ISA-L
    (``isal``). Pillow tries all five PNG filters on every row and deflates with zlib,
    several times the time for a file about as small on CT pictures. Other arrays
    go through Pillow."""
    if array.dtype != np.uint8 or array.ndim not in PNG_COLOUR_TYPES or 0 in array.shape:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    if array.ndim == 3 and array.shape[2] != 3:
        raise ValueError(f"an RGB picture has 3 channels, not {array.shape[2]}")
    return _png(array, PNG_COLOUR_TYPES[array.ndim])


def _png(array: np.ndarray, colour_type: int, palette: bytes = b"") -> bytes:
    rows, cols = array.shape[:2]
    scanlines = np.zeros((rows, 1 + array[0].size), np.uint8)  # filter byte 0: none
    scanlines[:, 1:] = array.reshape(rows, -1)
    header = struct.pack(">IIBBBBB", cols, rows, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", palette) if palette else b"",
            _png_chunk(b"IDAT", isal_zlib.compress(scanlines.data, DEFLATE_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def label_png_bytes(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> bytes:
    """A label mask as a palette PNG: the pixel values are the labels (0, 1, 2...), as
    every tool reading masks expects, and viewers show them in ``colours`` (0 black)
    instead of an all-black picture. Labels are 0-255 (``uint8``)."""
    palette = bytearray(768)
    for label, colour in colours.items():
        palette[3 * label : 3 * label + 3] = bytes(colour)
    if labels.ndim != 2 or 0 in labels.shape:
        raise ValueError(f"a label mask is a non-empty 2D array, not of shape {labels.shape}")
    return _png(np.asarray(labels, dtype=np.uint8), PNG_PALETTE, bytes(palette))


def lung_png(labels: np.ndarray) -> bytes:
    """The lung mask (0, 1 right, 2 left) as a palette PNG in the overlay's colours."""
    return label_png_bytes(labels, LUNG_COLOURS)


def infection_png(labels: np.ndarray) -> bytes:
    """The infection mask (0, 1 ground glass, 2 consolidation, 3 effusion) as a palette PNG."""
    return label_png_bytes(labels, INFECTION_COLOURS)


def overlay_picture(prediction: Prediction, index: int | None = None) -> np.ndarray:
    """RGB overlay of a slice (or of slice ``index`` of a volume)."""
    image, lung, infection = prediction.image.array, prediction.lung, prediction.infection
    if index is not None:
        image, lung = image[index], lung[index]
        infection = None if infection is None else infection[index]
    return overlay(to_display(image, prediction.image.intensity), lung, infection)


def annotated_overlay(prediction: Prediction) -> np.ndarray:
    """A slice's overlay as written to files: R/L on the lungs and a colour legend."""
    return annotate(
        overlay_picture(prediction), prediction.lung, infection=prediction.infection is not None
    )


def montage(prediction: Prediction, count: int = MONTAGE_SLICES) -> np.ndarray:
    """Overlays of ``count`` slices spread over the lungs (over the whole scan if none found),
    head first and numbered head to feet as the page and viewers count, with the DICOM
    instance number where there is one (``montage_captions``)."""
    with_lung = np.flatnonzero(prediction.lung.any(axis=(1, 2)))
    pool = with_lung if with_lung.size else np.arange(prediction.lung.shape[0])
    picks = pool[np.linspace(0, pool.size - 1, min(count, pool.size)).round().astype(int)]
    picks = picks[::-1]  # the array runs feet to head
    image, infection = prediction.image, prediction.infection
    slices = [
        (
            to_display(image.array[i], image.intensity),
            prediction.lung[i],
            None if infection is None else infection[i],
        )
        for i in picks.tolist()
    ]
    return visual_montage(slices, montage_captions(prediction, picks.tolist()), tile=MONTAGE_TILE)


def montage_captions(prediction: Prediction, indices: list[int]) -> list[str]:
    """Each slice's caption: its number head to feet ("slice 1/64" is the top), and its
    DICOM instance number where the series has them."""
    total = prediction.lung.shape[0]
    captions = []
    for index in indices:
        place = prediction.per_slice[index] if prediction.per_slice else None
        number = place.number if place is not None else total - index
        instance = f", instance {place.instance}" if place and place.instance is not None else ""
        captions.append(f"slice {number}/{total}{instance}")
    return captions


def write_prediction(prediction: Prediction, out: str | Path, stem: str) -> list[Path]:
    """Write a prediction's files into ``out`` (``lungseg.inference.save_prediction``):
    a slice's ``<stem>_mask.png`` and ``<stem>_overlay.png``, a scan's
    ``<stem>_mask.nii.gz`` (and ``<stem>_seg.dcm`` for a DICOM series) and a montage,
    the infection mask where there is one. Each
    file is written whole or not at all; an input refused as not an axial chest CT gets
    none. Returns their paths."""
    if prediction.check.status == "refused":
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not prediction.image.is_volume:
        written = [
            _write_atomically(out / f"{stem}_mask.png", lung_png(prediction.lung)),
            _write_atomically(
                out / f"{stem}_overlay.png", png_bytes(annotated_overlay(prediction))
            ),
        ]
        if prediction.infection is not None:
            written.append(
                _write_atomically(
                    out / f"{stem}_infection.png", infection_png(prediction.infection)
                )
            )
        return written
    written = []
    with ThreadPoolExecutor(1, thread_name_prefix="lungseg-montage") as helper:
        # the montage is drawn while the masks are encoded (mostly outside the GIL)
        montage_png = helper.submit(lambda: png_bytes(montage(prediction)))
        if prediction.image.geometry.affine is not None:
            written.append(
                _write_atomically(out / f"{stem}_mask.nii.gz", volume_mask_nifti(prediction))
            )
            if prediction.infection is not None:
                infection = volume_mask_nifti(prediction, prediction.infection)
                written.append(_write_atomically(out / f"{stem}_infection.nii.gz", infection))
            if prediction.image.geometry.dicom_headers:  # a DICOM series: a SEG over it too
                try:
                    seg = volume_mask_dicom_seg(prediction)
                except SegUnbuildable as error:
                    # headers a SEG cannot be built on: the other files come, with a note
                    prediction.notes.append(f"no DICOM Segmentation written: {error}")
                else:
                    written.append(_write_atomically(out / f"{stem}_seg.dcm", seg))
        else:  # a multi-page photo: no geometry to keep
            mask = _npy_bytes(prediction.lung)
            written.append(_write_atomically(out / f"{stem}_mask.npy", mask))
        written.append(_write_atomically(out / f"{stem}_overlay.png", montage_png.result()))
    return written


STATISTICS = "_statistics.json"
"""The file name ending of an input's summary (``write_statistics``)."""


def write_statistics(path: Path, summary: Summary) -> Path:
    """An input's summary (``result.Summary``, what ``--json`` prints) as indented JSON."""
    return _write_atomically(path, summary.model_dump_json(indent=2).encode())


def volume_mask_nifti(prediction: Prediction, labels: np.ndarray | None = None) -> bytes:
    """The volume's lung labels (or ``labels``) as a gzipped NIfTI: on a NIfTI input's own
    grid (shape, voxel order, affine, qform and sform: voxels pair with the input's by
    index), with a DICOM series' affine in the radiological view."""
    chosen = prediction.lung if labels is None else labels
    geometry = prediction.image.geometry
    nifti: nib.Nifti1Image
    if geometry.nifti_header is not None:  # a NIfTI input: its own shape, order and header
        data, header = to_source_grid(chosen.astype(np.uint8, copy=False), geometry)
        kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        nifti = kind(data, None, header=header)
    else:  # a DICOM series: the radiological view, with its affine
        data, affine = from_display_order(chosen, geometry)
        nifti = nib.Nifti1Image(data, affine)
        nifti.set_data_dtype(np.uint8)
    buffer = io.BytesIO()  # compressed as it is written: no uncompressed copy of the scan
    with igzip.IGzipFile(fileobj=buffer, mode="wb", compresslevel=DEFLATE_LEVEL, mtime=0) as handle:
        nifti.to_file_map(nifti.make_file_map({"image": handle, "header": handle}))
    return buffer.getvalue()


SEG_SEGMENTS = (  # (label value, name, SNOMED CT code)
    (1, "Right lung", "3341006"),
    (2, "Left lung", "44029006"),
)


class SegUnbuildable(ValueError):
    """The series' headers do not allow a valid DICOM Segmentation over it (what is
    missing or wrong says why): the CLI writes the other files with this as a note, the
    API answers 422 with it."""


def volume_mask_dicom_seg(prediction: Prediction) -> bytes:
    """The lungs of a DICOM series as a DICOM Segmentation (highdicom): two segments,
    right and left lung, each frame referring to its source image, so 3D Slicer and
    OHIF show it over the series. Only for inputs read from a DICOM series.

    Raises:
        SegUnbuildable: headers a SEG cannot be built on (de-identified without the
            study's identifiers, several frames of reference, slices sharing an
            instance UID, which would make frames refer to the wrong image ...).
    """
    try:
        return _dicom_seg(prediction)
    except SegUnbuildable:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise SegUnbuildable(str(error) or type(error).__name__) from error


def _dicom_seg(prediction: Prediction) -> bytes:
    import highdicom as hd
    from pydicom.sr.coding import Code

    geometry = prediction.image.geometry
    sources = tuple(_with_type_2(header) for header in geometry.dicom_headers)
    lacking = sorted({name for h in sources for name in TYPE_1 if not h.get(name)})
    if lacking:
        raise SegUnbuildable(
            f"the series' headers lack {', '.join(lacking)} (removed in de-identification?), "
            "which a SEG must refer to"
        )
    uids = [str(getattr(header, "SOPInstanceUID", "")) for header in sources]
    if len(set(uids)) < len(uids):
        raise SegUnbuildable(
            f"{len(uids) - len(set(uids))} of the series' slices share a SOP Instance UID "
            "with another: a SEG frame could not say which image it lies on"
        )
    labels = to_stored_order(prediction.lung.astype(np.uint8, copy=False), geometry)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lungseg",
        version=__version__,
        family=Code("123109", "DCM", "Artificial Intelligence"),
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=Code("123037004", "SCT", "Anatomical Structure"),
            segmented_property_type=Code(code, "SCT", name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            # the overlay's colours, so that viewers show right and left as the page does
            display_color=hd.color.CIELabColor.from_rgb(*LUNG_COLOURS[number]),
        )
        for number, name, code in SEG_SEGMENTS
    ]
    with warnings.catch_warnings():  # about the source's patient name format: not ours
        warnings.filterwarnings("ignore", "The string .* is unlikely to represent", UserWarning)
        seg = _segmentation(hd, sources, labels, descriptions)
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


TYPE_1 = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)
"""The identifiers a SEG refers its series by: required and never empty (DICOM type 1)."""
TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
"""Patient and study attributes a SEG must carry but may leave empty (DICOM type 2),
which de-identified series often lack."""


def _with_type_2(header: Any) -> Any:
    """``header``, or a copy with the type 2 attributes it lacks present and empty (the
    source's own header is left as read)."""
    missing = [name for name in TYPE_2 if name not in header]
    if not missing:
        return header
    header = copy.deepcopy(header)
    for name in missing:
        setattr(header, name, "")
    return header


def _segmentation(
    hd: Any, sources: tuple[Any, ...], labels: np.ndarray, descriptions: list[Any]
) -> Any:
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lungseg",
        manufacturer_model_name="lungseg lung U-Net",
        software_versions=__version__,
        device_serial_number="none",
        series_description="lungseg lungs",
        omit_empty_frames=True,
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
