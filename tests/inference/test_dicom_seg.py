"""DICOM Segmentation outputs over a DICOM series, read back with highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from synthetic import ct_volume, write_dicom_series, zip_files

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


def _series(tmp_path: Path, predictor: Predictor):  # type: ignore[no-untyped-def]
    hu, _ = ct_volume(slices=4, size=64, lung_free=1)
    write_dicom_series(tmp_path / "series", hu)
    return predictor.predict(tmp_path / "series")


def test_a_de_identified_series_still_gets_its_seg(tmp_path: Path, predictor: Predictor) -> None:
    """Issue 32: a series without the patient's name, birth date and sex (de-identified)
    got no SEG (highdicom needs them present, though they may be empty: DICOM type 2)."""
    prediction = _series(tmp_path, predictor)
    for header in prediction.image.geometry.dicom_headers:
        for name in ("PatientName", "PatientBirthDate", "PatientSex"):
            delattr(header, name)
    written = save_prediction(prediction, tmp_path / "out", "series")
    assert tmp_path / "out" / "series_seg.dcm" in written
    seg = pydicom.dcmread(tmp_path / "out" / "series_seg.dcm")
    assert seg.PatientBirthDate == "" and seg.PatientName == ""
    assert "PatientBirthDate" not in prediction.image.geometry.dicom_headers[0]  # as read


@pytest.mark.parametrize("fault", ["no study", "two frames of reference", "shared instance uid"])
def test_a_series_no_seg_can_be_built_on_says_why_on_both_paths(
    tmp_path: Path, predictor: Predictor, fault: str
) -> None:
    """Issue 32: the CLI wrote the other files with a note, the API answered a plain-text
    500; slices sharing an instance UID got a SEG whose frames point at the wrong image.
    Now both paths say why: a note beside the mask, a 422 with the reason."""
    from fastapi.testclient import TestClient

    from lungseg.serve.app import ServeSettings, create_app

    prediction = _series(tmp_path, predictor)
    headers = prediction.image.geometry.dicom_headers

    def spoil(items) -> None:  # type: ignore[no-untyped-def]
        if fault == "no study":
            for header in items:
                del header.StudyInstanceUID
        elif fault == "two frames of reference":
            items[0].FrameOfReferenceUID = "1.2.3.4"
        else:
            items[1].SOPInstanceUID = items[0].SOPInstanceUID

    spoil(headers)
    names = {p.name for p in save_prediction(prediction, tmp_path / "out", "series")}
    assert "series_seg.dcm" not in names and "series_mask.nii.gz" in names
    note = next(n for n in prediction.notes if n.startswith("no DICOM Segmentation written"))

    client = TestClient(create_app(ServeSettings(), predictor))
    original = predictor.segment

    def spoiled(image, **options):  # type: ignore[no-untyped-def]
        answer = original(image, **options)
        spoil(answer.image.geometry.dicom_headers)
        return answer

    archive = zip_files(tmp_path / "series.zip", sorted((tmp_path / "series").iterdir()))
    predictor.segment = spoiled  # type: ignore[method-assign]
    try:
        response = client.post(
            "/api/v1/segment-volume?format=seg",
            files={"file": ("series.zip", archive.read_bytes())},
        )
    finally:
        del predictor.segment
    assert response.status_code == 422, response.text
    reason = note.removeprefix("no DICOM Segmentation written: ")
    assert reason in response.json()["error"]
