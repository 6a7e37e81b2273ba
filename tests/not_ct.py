"""Pictures that are not an axial chest CT slice, as users upload them by mistake: a chest
radiograph and a coronal reformat made from the real DICOM series (shared/data), and
two photographs that scikit-image ships (a cat, a cup of coffee)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lungseg.imaging import read_image


def _upright_isotropic(plane_zx: np.ndarray, slice_mm: float, pixel_mm: float) -> np.ndarray:
    """A (z feet-to-head, x) plane as a picture: head at the top, square pixels."""
    picture = Image.fromarray(plane_zx[::-1].astype(np.float32))
    height = round(plane_zx.shape[0] * slice_mm / pixel_mm)
    return np.asarray(picture.resize((plane_zx.shape[1], height), Image.Resampling.BILINEAR))


def radiograph_from_scan(series: Path) -> np.ndarray:
    """A frontal chest radiograph (8-bit, bone white, lungs dark) projected through the scan."""
    scan = read_image(series)
    mu = np.clip(scan.array.astype(np.float32) + 1000.0, 0, None) / 1000.0  # water = 1
    path = mu.sum(axis=1) * scan.geometry.spacing[1] / 10.0  # cm of water along each ray
    film = 1.0 - np.exp(-0.08 * path)  # exposure: brighter where more tissue stops the rays
    picture = _upright_isotropic(film, scan.geometry.spacing[0], scan.geometry.spacing[2])
    return np.clip(picture / np.percentile(picture, 99.5) * 255, 0, 255).astype(np.uint8)


def coronal_from_scan(series: Path) -> np.ndarray:
    """A coronal reformat through the middle of the lungs, lung window, 8-bit."""
    scan = read_image(series)
    plane = scan.array[:, scan.array.shape[1] // 2, :].astype(np.float32)
    picture = _upright_isotropic(plane, scan.geometry.spacing[0], scan.geometry.spacing[2])
    return np.clip((picture + 1250) / 1500 * 255, 0, 255).astype(np.uint8)


def photographs() -> dict[str, np.ndarray]:
    """RGB photographs of other things."""
    import skimage.data

    return {"cat": skimage.data.chelsea(), "coffee": skimage.data.coffee()}


def not_ct_pictures(shared_data: Path, folder: Path) -> dict[str, Path]:
    """Each not-CT picture saved as PNG in ``folder``."""
    series = shared_data / "chest-ct-dicom" / "Lung_Dx-A0001"
    pictures = {"radiograph": radiograph_from_scan(series), "coronal": coronal_from_scan(series)}
    pictures.update(photographs())
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, picture in pictures.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(picture).save(paths[name])
    return paths
