"""Issue 31: the faster ways around the network decide exactly as the plain ways did.

Real slices of ../shared/data (HU TIFFs, MedSeg and clahe PNGs, DICOM files whose lungs
touch, the whole DICOM series) go through the shipped network twice: as lungseg runs
them, and with each function made faster for issue 31 swapped back to its plain
form (kept here as the reference). Lungs and infection must be equal pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from lungseg.core import masks
from lungseg.core.morphology import component_sizes, label
from lungseg.imaging import Intensity, readers
from lungseg.imaging.body import body_estimates, usable
from lungseg.inference import Predictor, model, preprocess

pytestmark = pytest.mark.slow


def split_touching_plainly(region: np.ndarray) -> np.ndarray | None:
    """``core.masks.split_touching`` as it was: every depth labelled over the whole box,
    each core's depth by ``ndi.maximum``."""
    box = masks.bounding_box(region)
    if box is None:
        return None
    local = np.pad(region[box], 1)
    depth = ndi.distance_transform_edt(local)
    for threshold in np.arange(1.0, masks.NECK_SHARE * float(depth.max()) + 1e-6):
        cores, count = label(depth > threshold)
        if count < 2:
            continue
        sizes = component_sizes(cores, count)
        sizes[0] = 0
        first, second = (int(i) for i in np.argsort(sizes)[::-1][:2])
        if sizes[second] < masks.SUBSTANTIAL * sizes[first]:
            continue
        if threshold > masks.NECK_SHARE * min(ndi.maximum(depth, cores, [first, second])):
            return None
        seeds = np.where(cores == first, 1, np.where(cores == second, 2, 0)).astype(np.uint8)
        _, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        parts = np.where(local, seeds[tuple(nearest)], 0).astype(np.uint8)
        part_sizes = np.bincount(parts.ravel(), minlength=3)
        if min(part_sizes[1:]) < masks.SECOND_LUNG_SHARE * max(part_sizes[1:]):
            return None
        if part_sizes[2] > part_sizes[1]:
            parts = np.array([0, 2, 1], np.uint8)[parts]
        out = np.zeros(region.shape, np.uint8)
        out[box] = parts[1:-1, 1:-1]
        return out
    return None


def decide_plainly(scores: np.ndarray, placement: preprocess.Placement) -> np.ndarray:
    """``preprocess.decision_at_slice_size`` with its window found by an argmax."""
    size = scores.shape[-1]
    if placement.side <= size or scores.shape[0] < 2:
        return preprocess.decision_at_slice_size(scores, placement)
    found = scores.argmax(axis=0) != 0
    rows, cols = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
    decision = np.zeros((placement.rows, placement.cols), np.uint8)
    if not rows.size:
        return decision
    scale = placement.side / size
    top, bottom = preprocess._window(rows, scale, size, placement.top, placement.rows)
    left, right = preprocess._window(cols, scale, size, placement.left, placement.cols)
    if top < bottom and left < right:
        decision[
            top - placement.top : bottom - placement.top,
            left - placement.left : right - placement.left,
        ] = preprocess._decide(scores, placement, top, left, bottom - top, right - left)
    return decision


def body_for_plainly(
    labels: np.ndarray, image: np.ndarray, intensity: Intensity, first: object = None
) -> np.ndarray | None:
    """``model.body_for`` making every body estimate, always."""
    lung = labels != 0
    candidates = usable(body_estimates(image, intensity))
    kept = [int(lung.sum()) if b is None else int((lung & b).sum()) for b in candidates]
    best = max(kept, default=0)
    chosen = (b for b, k in zip(candidates, kept, strict=True) if k >= model.BODY_KEEPS * best)
    return next(chosen, None)


def real_inputs(shared_data: Path) -> list[Path]:
    series = shared_data / "chest-ct-dicom" / "Lung_Dx-A0001"
    dicoms = sorted(series.glob("*.dcm"))
    return [
        *sorted((shared_data / "finding-lungs-ct" / "2d_images").glob("*.tif"))[::40],
        *sorted((shared_data / "medseg-covid-98" / "images").glob("*.png"))[::15],
        *sorted((shared_data / "covid19-ct-seg-clahe" / "images").glob("*.png"))[::120],
        *dicoms[20:32],  # upper lung levels, where the lungs touch in front
        series,
    ]


def test_faster_steps_give_the_masks_the_plain_steps_give(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor()
    inputs = real_inputs(shared_data)
    fast = [predictor.predict(path) for path in inputs]
    calls = {"split": 0}

    def counted_split(region: np.ndarray) -> np.ndarray | None:
        calls["split"] += 1
        return split_touching_plainly(region)

    monkeypatch.setattr(masks, "split_touching", counted_split)
    monkeypatch.setattr(model, "decision_at_slice_size", decide_plainly)
    monkeypatch.setattr(model, "body_for", body_for_plainly)
    cleaned = masks._cleaned
    monkeypatch.setattr(  # the cleaned lung's regions labelled anew, always
        masks, "_cleaned", lambda *args: (cleaned(*args)[0], False)
    )
    monkeypatch.setattr(readers, "_small_integers", lambda *_: False)  # the float rescale
    plain = [predictor.predict(path) for path in inputs]
    assert calls["split"] >= 4  # the touching lungs were split on this path
    for path, one, other in zip(inputs, fast, plain, strict=True):
        np.testing.assert_array_equal(one.lung, other.lung, err_msg=str(path))
        assert one.infection is not None and other.infection is not None
        np.testing.assert_array_equal(one.infection, other.infection, err_msg=str(path))
