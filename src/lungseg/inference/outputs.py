"""Files a prediction is written as; each is written aside and renamed, never half-written.

Slice: ``<stem>_mask.png`` (8-bit, the input's size: 0 background, 1 right lung,
2 left lung) and ``<stem>_overlay.png`` (the image with the right lung in red and
the left in blue, semi-transparent, outlined). Volume: ``<stem>_mask.nii.gz``
(the input's geometry) and ``<stem>_overlay.png`` (a montage of representative
slices).
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from lungseg.imaging import to_display
from lungseg.imaging.orientation import from_display_order
from lungseg.inference.predictor import Prediction
from lungseg.visualize import overlay

MONTAGE_SLICES = 8
MONTAGE_TILE = 256


def output_stem(path: Path) -> str:
    """``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def _write_atomically(path: Path, data: bytes) -> Path:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_picture(prediction: Prediction, index: int | None = None) -> np.ndarray:
    """RGB overlay of a slice (or of slice ``index`` of a volume)."""
    image, lung = prediction.image.array, prediction.lung
    if index is not None:
        image, lung = image[index], lung[index]
    return overlay(to_display(image, prediction.image.intensity), lung)


def montage(prediction: Prediction, count: int = MONTAGE_SLICES) -> np.ndarray:
    """Overlays of ``count`` slices spread over the lungs (over the whole scan if none found)."""
    with_lung = np.flatnonzero(prediction.lung.any(axis=(1, 2)))
    pool = with_lung if with_lung.size else np.arange(prediction.lung.shape[0])
    picks = pool[np.linspace(0, pool.size - 1, min(count, pool.size)).round().astype(int)]
    tiles = []
    for index in picks:
        tile = Image.fromarray(overlay_picture(prediction, int(index)))
        tiles.append(
            np.asarray(tile.resize((MONTAGE_TILE, MONTAGE_TILE), Image.Resampling.BILINEAR))
        )
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)]
    return np.concatenate(rows, axis=0)


def write_prediction(prediction: Prediction, out: Path, stem: str) -> list[Path]:
    """Write a prediction's files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    if not prediction.image.is_volume:
        return [
            _write_atomically(out / f"{stem}_mask.png", png_bytes(prediction.lung)),
            _write_atomically(out / f"{stem}_overlay.png", png_bytes(overlay_picture(prediction))),
        ]
    written = []
    if prediction.image.geometry.affine is not None:
        written.append(
            _write_atomically(out / f"{stem}_mask.nii.gz", volume_mask_nifti(prediction))
        )
    else:  # a multi-page photo: no geometry to keep
        written.append(_write_atomically(out / f"{stem}_mask.npy", _npy_bytes(prediction.lung)))
    written.append(_write_atomically(out / f"{stem}_overlay.png", png_bytes(montage(prediction))))
    return written


def volume_mask_nifti(prediction: Prediction) -> bytes:
    """The volume's lung labels as a gzipped NIfTI with the input's affine."""
    data, affine = from_display_order(prediction.lung, prediction.image.geometry)
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_data_dtype(np.uint8)
    return gzip.compress(nifti.to_bytes(), compresslevel=6)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
