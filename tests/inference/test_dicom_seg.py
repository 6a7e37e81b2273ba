"""DICOM Segmentation outputs over a DICOM series, read back with highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from synthetic import ct_volume, write_dicom_series

from lungseg.inference import Predictor, save_prediction
from lungseg.inference.encode import volume_mask_dicom_seg
from lungseg.visualize import LUNG_COLOURS


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0), (0, 1, 0, 1, 0, 0)],
    ids=["standard", "rows-and-columns-flipped", "transposed"],
)
def test_the_seg_frames_lie_on_their_source_images(
    tmp_path: Path, predictor: Predictor, orientation: tuple[int, ...]
) -> None:
    """Each frame of the SEG refers to one source file and covers that file's own lungs,
    in that file's own pixel order, whatever order the series is stored in."""
    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    paths = write_dicom_series(tmp_path / "series", hu, orientation=orientation)
    truth = {}  # each source file's lungs, in its stored pixel order
    for index, path in enumerate(paths):  # the writer stores plane ``index`` as given
        truth[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = lungs[index] > 0
    prediction = predictor.predict(tmp_path / "series")
    written = save_prediction(prediction, tmp_path / "out", "series")
    assert tmp_path / "out" / "series_seg.dcm" in written

    seg = hd.seg.segread(tmp_path / "out" / "series_seg.dcm")
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == [
        "Right lung",
        "Left lung",
    ]
    # each segment shown in the overlay's colour (red right, blue left), as the page does
    for number in (1, 2):
        lab = seg.SegmentSequence[number - 1].RecommendedDisplayCIELabValue
        rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
        assert np.abs(np.array(rgb) - np.array(LUNG_COLOURS[number])).max() <= 2, (number, rgb)
    uids = list(truth)
    labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    for uid, plane in zip(uids, labels, strict=True):
        expected = truth[uid]
        overlap = 2 * (expected & (plane > 0)).sum() / max(1, expected.sum() + (plane > 0).sum())
        assert overlap > 0.9 or (not expected.any() and not plane.any()), uid
    # the same right and left lung as the prediction (and its NIfTI mask), voxel for voxel
    for label in (1, 2):
        assert int((labels == label).sum()) == int((prediction.lung == label).sum())
    assert labels.any()


def test_no_seg_without_a_dicom_series(tmp_path: Path, predictor: Predictor) -> None:
    hu, _ = ct_volume(slices=4, size=64, lung_free=1)
    prediction = predictor.predict(hu, spacing=(5.0, 0.8, 0.8))
    with pytest.raises(ValueError, match="not a DICOM series"):
        volume_mask_dicom_seg(prediction)


def test_a_series_highdicom_cannot_use_still_gets_its_other_files(
    tmp_path: Path, predictor: Predictor
) -> None:
    hu, _ = ct_volume(slices=4, size=64, lung_free=1)
    write_dicom_series(tmp_path / "series", hu)
    prediction = predictor.predict(tmp_path / "series")
    for header in prediction.image.geometry.dicom_headers:
        del header.StudyInstanceUID  # a header highdicom refuses
    written = save_prediction(prediction, tmp_path / "out", "series")
    names = {p.name for p in written}
    assert "series_seg.dcm" not in names
    assert {"series_mask.nii.gz", "series_overlay.png"} <= names
    assert any("no DICOM Segmentation written" in note for note in prediction.notes)


def test_the_montage_runs_head_to_feet_with_instance_numbers(
    tmp_path: Path, predictor: Predictor
) -> None:
    """One slice order everywhere: the montage's first tile is the top slice, numbered 1
    as the page numbers it, with its DICOM instance number (the writer numbers instances
    from the head down); a NIfTI has no instance numbers."""
    from lungseg.inference.encode import montage_captions

    hu, _ = ct_volume(slices=6, size=64, lung_free=1)
    write_dicom_series(tmp_path / "series", hu)
    prediction = predictor.predict(tmp_path / "series")
    top, bottom = len(hu) - 1, 0  # the array runs feet to head
    assert montage_captions(prediction, [top, bottom]) == [
        "slice 1/6, instance 1",
        "slice 6/6, instance 6",
    ]
    assert prediction.per_slice is not None and prediction.per_slice[top].number == 1
