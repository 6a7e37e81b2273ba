"""Lung labels from Hounsfield units, for scans that have no masks.

The labelled sets hold mostly mid-lung slices; real scans run from below the
lung bases to above the apices. ``threshold_lungs`` labels such a scan the
classic way, so that those levels (lung-free abdomen, small apex and base
lungs) can be trained on: air-density voxels inside the body, kept where they
form the lungs in 3D (stomach and bowel gas are separate, much smaller
components), without the trachea (a small round region on the midline).

The labels are approximate: look at the picture ``pseudo-label`` writes before
training on them, and keep such scans out of test numbers.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from lungseg.core.masks import clean_lung_mask, split_left_right
from lungseg.core.morphology import component_sizes
from lungseg.errors import LungsegError
from lungseg.imaging import CTImage, Intensity, read_image, to_display
from lungseg.imaging.body import body_mask, dense_tissue
from lungseg.imaging.orientation import from_display_order
from lungseg.visualize import every_level

LUNG_COMPONENT_SHARE = 0.1
"""3D dark components smaller than this share of the largest (gas in the gut) are not lung."""
AIRWAY_MAX_MM2 = 800.0
"""Largest cross-section of a midline dark region taken as trachea rather than lung."""
MIDLINE_SHARE = 0.1
"""A region centred within this share of the body's width from its middle is on the midline."""


def threshold_lungs(scan: CTImage) -> np.ndarray:
    """Binary lung mask ``(slices, rows, cols)`` of a HU volume from thresholds and shape.

    Raises:
        LungsegError: the scan is not a HU volume.
    """
    if scan.intensity is not Intensity.HU or not scan.is_volume:
        raise LungsegError(f"{scan.source}: threshold labels need a HU volume")
    body = np.stack([body_mask(dense_tissue(plane, Intensity.HU)) for plane in scan.array])
    dark = body & ~dense_tissue(scan.array, Intensity.HU)
    lungs = clean_lung_mask(dark, body, min_component_share=LUNG_COMPONENT_SHARE)
    pixel_mm2 = float(np.prod(scan.geometry.spacing[-2:])) if scan.geometry.spacing else 1.0
    for index, plane in enumerate(lungs):
        lungs[index] = _without_airway(plane, body[index], pixel_mm2)
    return lungs


def _without_airway(plane: np.ndarray, body: np.ndarray, pixel_mm2: float) -> np.ndarray:
    labels, count = ndi.label(plane)
    if count == 0 or not body.any():
        return plane
    body_columns = np.nonzero(body.any(axis=0))[0]
    middle = (body_columns[0] + body_columns[-1]) / 2.0
    width = body_columns[-1] - body_columns[0] + 1
    sizes = component_sizes(labels, count).astype(np.float64)
    columns = np.broadcast_to(np.arange(plane.shape[1]), plane.shape)
    centres = np.bincount(
        labels.ravel(), weights=columns.ravel(), minlength=count + 1
    ) / np.maximum(sizes, 1)
    airway = (sizes * pixel_mm2 <= AIRWAY_MAX_MM2) & (
        np.abs(centres - middle) <= MIDLINE_SHARE * width
    )
    airway[0] = False
    return plane & ~airway[labels]


def write_pseudo_labelled(scans: list[Path], out: Path) -> list[Path]:
    """Label each scan and write a source folder ``dataset build`` reads.

    Layout: ``out/images/<name>.nii.gz``, ``out/masks/<name>.nii.gz`` and
    ``out/pseudo_labels_<name>.png`` (a montage to check the labels by eye).
    """
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    pictures = []
    for path in scans:
        scan = read_image(path)
        lungs = threshold_lungs(scan)
        name = path.name.split(".")[0]
        image_xyz, affine = from_display_order(scan.array, scan.geometry)
        # right 1, left 2: the scan's orientation tells the sides (radiological view)
        mask_xyz, _ = from_display_order(split_left_right(lungs), scan.geometry)
        nib.save(nib.Nifti1Image(image_xyz, affine), str(out / "images" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(mask_xyz, affine), str(out / "masks" / f"{name}.nii.gz"))
        levels = every_level(to_display(scan.array, scan.intensity), lungs.astype(np.uint8) * 3)
        pictures.append(out / f"pseudo_labels_{name}.png")
        Image.fromarray(levels).save(pictures[-1])
    return pictures
