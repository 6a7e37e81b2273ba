from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from synthetic import (
    LPS_AFFINE,
    ct_slice,
    ct_volume,
    display_slice,
    write_dicom_series,
    write_dicom_slice,
    write_nifti,
    write_png,
    write_tiff_hu,
)

from lungseg.cli import main
from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.errors import ImageReadError
from lungseg.imaging import read_image, read_mask
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, undo_dihedral
from lungseg.inference import Predictor, save_prediction
from lungseg.inference.result import describe


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_slice_keeps_its_size_and_sides(tmp_path: Path, predictor: Predictor) -> None:
    hu, lungs = ct_slice(96)
    result = predictor.predict(write_tiff_hu(tmp_path / "slice.tif", hu))
    assert result.kind == "slice"
    assert result.lung.shape == hu.shape
    # 96 px slices go through the 64 px model and back: edges may move by a pixel.
    assert _dice(result.lung == LUNG_RIGHT, lungs == 1) > 0.95  # image left = right lung
    assert _dice(result.lung == LUNG_LEFT, lungs == 2) > 0.95
    assert result.unit == "px"
    assert result.measures["total"] == pytest.approx((lungs > 0).sum(), rel=0.05)


def test_dicom_slice_area_in_mm2(tmp_path: Path, predictor: Predictor) -> None:
    hu, lungs = ct_slice(64)
    result = predictor.predict(write_dicom_slice(tmp_path / "a.dcm", hu, pixel=(0.5, 0.5)))
    assert result.unit == "mm2"
    assert result.measures["total"] == pytest.approx((lungs > 0).sum() * 0.25)


@pytest.mark.parametrize(("turns", "flip"), DIHEDRAL)
def test_every_orientation_gives_the_same_mask_turned(
    tmp_path: Path, predictor: Predictor, turns: int, flip: bool
) -> None:
    grey = display_slice(ct_slice(80)[0])
    upright = predictor.predict(write_png(tmp_path / "up.png", grey)).lung > 0
    turned = (
        predictor.predict(
            write_png(tmp_path / "turned.png", apply_dihedral(grey, turns, flip))
        ).lung
        > 0
    )
    np.testing.assert_array_equal(undo_dihedral(turned, turns, flip), upright)


def test_odd_sized_rgb_photo(tmp_path: Path, predictor: Predictor) -> None:
    grey = display_slice(ct_slice(96)[0])[3:90, 1:77]
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "photo.jpg", quality=92)
    result = predictor.predict(tmp_path / "photo.jpg")
    assert result.lung.shape == grey.shape
    assert result.measures["right"] > 0 and result.measures["left"] > 0


def test_volume_in_ml_with_lung_free_levels_empty(tmp_path: Path, predictor: Predictor) -> None:
    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    write_dicom_series(tmp_path / "series", hu, spacing=(5.0, 0.8, 0.8))
    result = predictor.predict(tmp_path / "series")
    assert result.kind == "volume" and result.unit == "mL"
    assert not result.lung[0].any() and not result.lung[-1].any()
    assert result.measures["total"] == pytest.approx((lungs > 0).sum() * 5.0 * 0.64 / 1000.0)


def test_bad_input_is_an_image_read_error(tmp_path: Path, predictor: Predictor) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageReadError):
        predictor.predict(tmp_path / "bad.png")


def test_predict_command_writes_every_output_and_goes_on_after_a_bad_file(
    tmp_path: Path, model: Path, capsys
) -> None:
    hu, _ = ct_slice(96)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_png(inputs / "photo.png", display_slice(hu))
    write_tiff_hu(inputs / "hu.tif", hu)
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    write_nifti(inputs / "scan.nii.gz", volume)
    write_dicom_series(inputs / "series", volume)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really")
    args = [str(inputs / n) for n in ("photo.png", "broken.jpg", "hu.tif", "scan.nii.gz", "series")]
    out = tmp_path / "out"
    code = main(["predict", *args, "--out", str(out), "--model", str(model), "--json"])
    assert code == 1  # one input failed
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("kind", "error") for r in records] == [
        "slice",
        "error",
        "slice",
        "volume",
        "volume",
    ]
    mask = np.array(Image.open(out / "photo_mask.png"))
    assert mask.shape == hu.shape and set(np.unique(mask)) == {0, 1, 2}
    assert np.array(Image.open(out / "photo_overlay.png")).shape == (*hu.shape, 3)
    nifti = nib.load(str(out / "scan_mask.nii.gz"))
    np.testing.assert_allclose(nifti.affine, nib.load(str(inputs / "scan.nii.gz")).affine)
    assert read_image(out / "scan_mask.nii.gz").array.shape == volume.shape
    assert (out / "series_mask.nii.gz").exists() and (out / "series_overlay.png").exists()
    assert not list(out.glob(".*partial*"))
    assert records[3]["lung"]["unit"] == "mL" and records[3]["lung"]["total"] > 0


def test_a_sided_model_labels_a_photo_by_its_own_sides(tmp_path: Path) -> None:
    """A photo has no orientation: the model's right and left (from anatomy in the real
    model) are the answer, even where they contradict the picture's layout."""
    from models import sided_onnx

    hu, lungs = ct_slice(64)
    png = write_png(tmp_path / "slice.png", display_slice(hu))
    swapped = Predictor(sided_onnx(tmp_path / "swap.onnx", swap=True), infection=False)
    result = swapped.predict(png)
    assert _dice(result.lung == LUNG_RIGHT, lungs == 2) > 0.95
    assert _dice(result.lung == LUNG_LEFT, lungs == 1) > 0.95
    assert not any("sides from the file" in note for note in result.notes)


def test_a_file_with_orientation_keeps_its_sides_where_the_model_disagrees(
    tmp_path: Path,
) -> None:
    from models import sided_onnx

    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    scan = write_dicom_series(tmp_path / "scan", hu)
    agreeing = Predictor(sided_onnx(tmp_path / "ok.onnx"), infection=False).predict(
        tmp_path / "scan"
    )
    assert _dice(agreeing.lung == LUNG_RIGHT, lungs == 1) > 0.95
    assert not any("sides from the file" in note for note in agreeing.notes)
    result = Predictor(sided_onnx(tmp_path / "swap.onnx", swap=True), infection=False).predict(
        tmp_path / "scan"
    )
    assert scan and _dice(result.lung == LUNG_RIGHT, lungs == 1) > 0.95
    assert _dice(result.lung == LUNG_LEFT, lungs == 2) > 0.95
    assert any("sides from the file kept" in note for note in result.notes)


def test_a_photo_the_model_finds_turned_is_segmented_upright(tmp_path: Path) -> None:
    """With an orientation head that finds a photo mirrored, the photo is segmented
    mirrored back (upright) and the masks mirrored onto it: the stand-in's sides by
    position then fall on the picture's other side. On a file that has its orientation,
    the picture is taken as it is. A head unsure of every turn that reads the picture and
    its mirror image alike finds nothing of a CT slice's anatomy: the answer is flagged
    for review (this may not be an axial CT slice) and the picture taken as it is."""
    from models import sided_and_turned_onnx

    hu, lungs = ct_slice(64)
    png = write_png(tmp_path / "slice.png", display_slice(hu))
    mirror = DIHEDRAL.index((0, True))
    result = Predictor(sided_and_turned_onnx(tmp_path / "m.onnx", mirror), infection=False).predict(
        png
    )
    assert _dice(result.lung == LUNG_RIGHT, lungs == 2) > 0.95  # the picture's right side
    assert _dice(result.lung == LUNG_LEFT, lungs == 1) > 0.95
    assert any("looks mirrored left-right (from" in note for note in result.notes)
    unsure = sided_and_turned_onnx(tmp_path / "u.onnx", mirror, confidence=0.4)
    as_is = Predictor(unsure, infection=False).predict(png)
    assert _dice(as_is.lung == LUNG_RIGHT, lungs == 1) > 0.95
    assert not any("looks" in note for note in as_is.notes)
    assert as_is.check.status == "review"
    assert "may not be an axial CT slice" in as_is.check.reasons[0]
    # a quarter turn: the masks come back on the picture as given, whole
    turned = write_png(tmp_path / "turned.png", apply_dihedral(display_slice(hu), 1, False))
    quarter = sided_and_turned_onnx(tmp_path / "q.onnx", DIHEDRAL.index((1, False)))
    found = Predictor(quarter, infection=False).predict(turned)
    upright_lungs = undo_dihedral(found.lung, 1, False)
    assert _dice(upright_lungs == LUNG_RIGHT, lungs == 1) > 0.95
    assert _dice(upright_lungs == LUNG_LEFT, lungs == 2) > 0.95
    # a DICOM series says how it lies: its sides are the file's, never turned
    volume, volume_lungs = ct_volume(slices=6, size=64, lung_free=1)
    write_dicom_series(tmp_path / "scan", volume)
    scan = Predictor(sided_and_turned_onnx(tmp_path / "m.onnx", mirror), infection=False).predict(
        tmp_path / "scan"
    )
    assert _dice(scan.lung == LUNG_RIGHT, volume_lungs == 1) > 0.95
    assert not any("looks" in note for note in scan.notes)


def test_an_unsure_orientation_is_checked_against_the_mirrored_picture(tmp_path: Path) -> None:
    """Below ``TURN_SURE`` the head is asked again about the mirror image; where both
    answers agree (the mirror image in the mirrored turn) that turn is taken, though
    the first answer alone would not have been confident enough to act on."""
    from models import unsure_but_consistent_onnx

    from lungseg.imaging.orientation import MIRRORED_TURN

    hu, lungs = ct_slice(64)
    picture = display_slice(hu)
    picture[:, :6] = 255  # brighter on the left: the stand-in's cue
    png = write_png(tmp_path / "slice.png", picture)
    mirror = DIHEDRAL.index((0, True))
    model = unsure_but_consistent_onnx(tmp_path / "u.onnx", mirror, MIRRORED_TURN[mirror])
    result = Predictor(model, infection=False).predict(png)
    assert any("looks mirrored left-right" in note for note in result.notes)
    assert _dice(result.lung == LUNG_RIGHT, lungs == 2) > 0.95  # segmented mirrored back


@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("black.png", np.zeros((64, 64), np.uint8)),
        ("grey.png", np.full((64, 64), 128, np.uint8)),
        ("zero16.png", np.zeros((64, 64), np.uint16)),
    ],
)
def test_a_blank_slice_is_refused_with_its_reason(
    tmp_path: Path, predictor: Predictor, name: str, pixels: np.ndarray
) -> None:
    Image.fromarray(pixels).save(tmp_path / name)
    result = predictor.predict(tmp_path / name)
    assert not result.lung.any()
    assert result.check.status == "refused"
    assert result.check.reasons == ["the picture holds one value only: there is no body in it"]


def test_a_volume_with_one_blank_slice_is_segmented(tmp_path: Path, predictor: Predictor) -> None:
    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    hu[0] = -1024  # one slice of air only
    write_nifti(tmp_path / "scan.nii.gz", hu)
    result = predictor.predict(tmp_path / "scan.nii.gz")
    assert not result.lung[0].any()
    assert _dice(result.lung != 0, lungs != 0) > 0.95


def test_inputs_that_share_a_name_never_overwrite_each_other(
    tmp_path: Path, model: Path, capsys
) -> None:
    """``a/1.png`` + ``b/1.png`` and ``x.png`` + ``x.dcm``: four inputs, four sets of files,
    and a note saying how they were named."""
    hu, _ = ct_slice(64)
    small, _ = ct_slice(64, lung_scale=0.6)
    for folder, pixels in (("a", hu), ("b", small)):
        (tmp_path / folder).mkdir()
        write_png(tmp_path / folder / "1.png", display_slice(pixels))
    write_png(tmp_path / "x.png", display_slice(hu))
    write_dicom_slice(tmp_path / "x.dcm", small)
    inputs = [
        tmp_path / "a" / "1.png",
        tmp_path / "b" / "1.png",
        tmp_path / "x.png",
        tmp_path / "x.dcm",
    ]
    out = tmp_path / "out"
    assert main(["predict", *map(str, inputs), "--out", str(out), "--model", str(model)]) == 0
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert masks == ["a_1_mask.png", "b_1_mask.png", "dcm_x_mask.png", "png_x_mask.png"]
    # each file holds its own input's answer (the two slices differ in lung size)
    sizes = {n: int((np.array(Image.open(out / n)) > 0).sum()) for n in masks}
    assert sizes["a_1_mask.png"] > sizes["b_1_mask.png"]
    assert sizes["png_x_mask.png"] > sizes["dcm_x_mask.png"]
    assert "share a name" in capsys.readouterr().err


def test_half_written_files_of_a_killed_run_are_swept(tmp_path: Path, model: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".photo_mask.png.partial-999999999"  # no such process
    dead.write_bytes(b"half")
    hu, _ = ct_slice(64)
    photo = write_png(tmp_path / "photo.png", display_slice(hu))
    assert main(["predict", str(photo), "--out", str(out), "--model", str(model)]) == 0
    assert not dead.exists()
    assert not list(out.glob(".*partial*"))
    assert "half-written" in capsys.readouterr().err


def test_a_nifti_without_voxel_sizes_is_measured_in_voxels_with_a_note(
    tmp_path: Path, predictor: Predictor
) -> None:
    hu, _ = ct_volume(slices=6, size=64, lung_free=1)
    nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), None), str(tmp_path / "bare.nii.gz"))
    result = predictor.predict(tmp_path / "bare.nii.gz")
    assert result.unit == "px"
    assert result.measures["total"] == float((result.lung != 0).sum())
    assert any("no voxel size" in note for note in result.notes)


def test_a_bug_on_one_input_is_one_line_and_the_batch_goes_on(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    hu, _ = ct_slice(64)
    first, second = write_png(tmp_path / "a.png", display_slice(hu)), tmp_path / "b.png"
    write_png(second, display_slice(hu))
    original = Predictor.predict

    def buggy(self: Predictor, path: Path, **options):  # type: ignore[no-untyped-def]
        if Path(path).name == "a.png":
            raise KeyError("a bug in the code, not a bad file")
        return original(self, path, **options)

    monkeypatch.setattr(Predictor, "predict", buggy)
    out = tmp_path / "out"
    code = main(["predict", str(first), str(second), "--out", str(out), "--model", str(model)])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if "failed" in line]
    assert len(errors) == 1 and "unexpected error KeyError" in errors[0] and "a.png" in errors[0]
    assert (out / "b_mask.png").exists()  # the next input was still segmented


def test_predict_refuses_a_scan_over_the_slice_limit(tmp_path: Path, model: Path, capsys) -> None:
    volume, _ = ct_volume(slices=6, size=32, lung_free=1)
    path = write_nifti(tmp_path / "scan.nii.gz", volume)
    args = ["predict", str(path), "--out", str(tmp_path / "out"), "--model", str(model)]
    assert main([*args, "--max-slices", "5"]) == 1
    assert "6 slices are more than the limit of 5" in capsys.readouterr().err
    assert main([*args, "--max-slices", "6"]) == 0


@pytest.mark.parametrize("canonical", [True, False])
def test_a_volume_mask_lies_on_the_input_grid(
    tmp_path: Path, predictor: Predictor, canonical: bool
) -> None:
    """Voxels pair by index: the mask has the input's shape, voxel order, affine, qform
    and sform, whatever order the NIfTI stores (RAS as nibabel's as_closest_canonical
    writes it, or LPS)."""
    volume, labels = ct_volume(slices=8, size=64, lung_free=1)
    lps = nib.Nifti1Image(np.transpose(volume, (2, 1, 0)).astype(np.int16), LPS_AFFINE)
    lps.set_qform(LPS_AFFINE, code=1)
    lps.set_sform(LPS_AFFINE, code=2)
    image = nib.as_closest_canonical(lps) if canonical else lps
    path = tmp_path / "scan.nii.gz"
    nib.save(image, path)
    out = tmp_path / "out"
    assert (
        main(["predict", str(path), "--out", str(out), "--model", str(predictor.model.path)]) == 0
    )
    mask = nib.load(out / "scan_mask.nii.gz")
    source = nib.load(path)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine)
    np.testing.assert_allclose(mask.get_qform(), source.get_qform())
    np.testing.assert_allclose(mask.get_sform(), source.get_sform())
    for code in ("qform_code", "sform_code"):
        assert int(mask.header[code]) == int(source.header[code]), code
    found = np.asarray(mask.dataobj) > 0
    hu = np.asarray(source.dataobj)
    assert hu[found].mean() < -700  # the mask's voxels are the input's lung voxels
    truth_image = nib.Nifti1Image(np.transpose(labels, (2, 1, 0)).astype(np.uint8), LPS_AFFINE)
    if canonical:
        truth_image = nib.as_closest_canonical(truth_image)
    truth = np.asarray(truth_image.dataobj) > 0
    assert _dice(found, truth) > 0.9


def test_mask_pngs_hold_the_labels_and_show_them_in_colour(tmp_path: Path, model: Path) -> None:
    hu, _ = ct_slice(96)
    photo = write_png(tmp_path / "photo.png", display_slice(hu))
    out = tmp_path / "out"
    assert main(["predict", str(photo), "--out", str(out), "--model", str(model)]) == 0
    with Image.open(out / "photo_mask.png") as mask:
        assert mask.mode == "P"  # a viewer shows colours, not near-black greys
        labels = np.array(mask)
        palette = mask.getpalette()
    assert palette is not None
    assert set(np.unique(labels)) == {0, 1, 2}  # the values are still the labels
    assert tuple(palette[3:6]) == (230, 75, 60) and tuple(palette[6:9]) == (50, 130, 230)
    np.testing.assert_array_equal(read_mask(out / "photo_mask.png").array, labels)


def test_the_python_api_takes_arrays_and_nibabel_images(
    tmp_path: Path, predictor: Predictor
) -> None:
    hu, _ = ct_slice(96)
    from_file = predictor.predict(write_tiff_hu(tmp_path / "hu.tif", hu))
    from_array = predictor.predict(hu, spacing=(0.7, 0.7))
    np.testing.assert_array_equal(from_array.lung, from_file.lung)
    assert from_array.unit == "mm2"
    assert from_array.measures["total"] == pytest.approx(from_file.measures["total"] * 0.49)
    assert predictor.predict(display_slice(hu)).lung.any()  # 8-bit values: display
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    image = nib.Nifti1Image(np.transpose(volume, (2, 1, 0)).astype(np.int16), LPS_AFFINE)
    in_memory = predictor.predict(image)
    on_disk = predictor.predict(write_nifti(tmp_path / "scan.nii.gz", volume))
    np.testing.assert_array_equal(in_memory.lung, on_disk.lung)
    assert in_memory.unit == "mL"
    written = save_prediction(in_memory, tmp_path / "out", "scan")
    names = {p.name for p in written}
    assert {"scan_mask.nii.gz", "scan_overlay.png"} <= names and all(p.is_file() for p in written)
    assert read_image(tmp_path / "out" / "scan_mask.nii.gz").array.shape == volume.shape
    with pytest.raises(ImageReadError, match="2D or 3D"):
        predictor.predict(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ImageReadError, match="spacing"):
        predictor.predict(hu, spacing=(1.0, 1.0, 1.0))


def test_the_cli_reads_a_folder_of_pictures_and_a_zipped_series(
    tmp_path: Path, model: Path, capsys
) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for index in range(3):
        write_png(pictures / f"slice{index}.png", display_slice(ct_slice(64, seed=index)[0]))
    (pictures / "README.txt").write_text("exported slices")
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    series = tmp_path / "series"
    write_dicom_series(series, volume)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted(series.iterdir()):
            bundle.write(file, f"nested/{file.name}")
    out = tmp_path / "out"
    args = [str(pictures), str(archive), "--out", str(out), "--model", str(model), "--json"]
    assert main(["predict", *args]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in records] == ["slice", "slice", "slice", "volume"]
    assert sorted(p.name for p in out.glob("*_mask.*")) == [
        "series_mask.nii.gz",
        "slice0_mask.png",
        "slice1_mask.png",
        "slice2_mask.png",
    ]
    assert records[3]["lung"]["unit"] == "mL" and records[3]["lung"]["total"] > 0


def test_each_input_leaves_its_statistics_next_to_its_masks(
    tmp_path: Path, model: Path, capsys
) -> None:
    """Issue 32: as TotalSegmentator's statistics.json, each input's summary (what --json
    prints) is written into --out; a refused input gets none, as it gets no mask."""
    from lungseg.inference.result import Summary

    photo = write_png(tmp_path / "photo.png", display_slice(ct_slice(64)[0]))
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    scan = write_nifti(tmp_path / "scan.nii.gz", volume)
    blank = write_png(tmp_path / "blank.png", np.zeros((64, 64), np.uint8))
    out = tmp_path / "out"
    args = [str(photo), str(scan), str(blank), "--out", str(out), "--model", str(model)]
    assert main(["predict", *args, "--json"]) == 1  # the blank picture is refused
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for record, stem in zip(records[:2], ("photo", "scan"), strict=True):
        statistics = out / f"{stem}_statistics.json"
        assert str(statistics) in record["outputs"]
        assert Summary.model_validate_json(statistics.read_text()).model_dump(mode="json") == record
    assert not (out / "blank_statistics.json").exists()
    assert "<stem>_statistics.json" in build_parser_help()


def build_parser_help() -> str:
    from lungseg.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return commands["predict"].format_help()


def test_the_notes_reach_the_cli_line_and_the_json(tmp_path: Path, model: Path, capsys) -> None:
    """A folder holding two series gives the larger one, and says so (it was silent)."""
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    folder = tmp_path / "two_series"
    write_dicom_series(folder / "a", volume)
    write_dicom_series(folder / "b", volume[:4])
    args = [str(folder), "--out", str(tmp_path / "out"), "--model", str(model)]
    assert main(["predict", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  note: 2 series in the folder") for line in lines), lines
    assert main(["predict", *args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert any(note.startswith("2 series in the folder") for note in record["notes"])


def test_overlays_say_which_lung_is_which_and_what_the_colours_mean(
    tmp_path: Path, model: Path
) -> None:
    hu, _ = ct_slice(256)
    photo = write_png(tmp_path / "photo.png", display_slice(hu))
    mirrored = write_png(tmp_path / "mirrored.png", display_slice(hu)[:, ::-1].copy())
    out = tmp_path / "out"
    assert (
        main(["predict", str(photo), str(mirrored), "--out", str(out), "--model", str(model)]) == 0
    )
    for stem in ("photo", "mirrored"):
        picture = np.array(Image.open(out / f"{stem}_overlay.png"))
        lung = np.array(Image.open(out / f"{stem}_mask.png"))
        assert picture.shape == (*hu.shape, 3)
        spread = picture.max(axis=2).astype(int) - picture.min(axis=2)
        white = (picture.min(axis=2) >= 200) & (spread < 30)  # text over a dark tinted lung
        for label in (LUNG_RIGHT, LUNG_LEFT):  # "R" and "L" written on each lung's centre
            rows, cols = np.nonzero(lung == label)
            r, c = int(rows.mean()), int(cols.mean())
            assert white[r - 8 : r + 8, c - 8 : c + 8].any(), (stem, label)
        for colour in ((230, 75, 60), (50, 130, 230)):  # the legend's colour squares, in
            square = np.all(picture == colour, axis=2)  # a corner (the lungs are tinted)
            assert square.any(), colour
            ys, xs = np.nonzero(square)
            assert min(ys.min(), hu.shape[0] - ys.max()) < 110, colour
            assert min(xs.min(), hu.shape[1] - xs.max()) < 110, colour


def test_a_volume_reports_its_lung_area_per_slice_and_lesions_in_ml(
    tmp_path: Path, predictor: Predictor
) -> None:
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    prediction = predictor.predict(write_nifti(tmp_path / "scan.nii.gz", volume))
    assert prediction.per_slice is not None and len(prediction.per_slice) == 6
    pixel_mm2 = 0.8 * 0.8  # synthetic.LPS_AFFINE
    for plane, area in zip(prediction.lung, prediction.per_slice, strict=True):
        assert area.total == pytest.approx((plane != 0).sum() * pixel_mm2, abs=0.1)
    total_ml = sum(a.total for a in prediction.per_slice) * 5.0 / 1000  # 5 mm slices
    assert total_ml == pytest.approx(prediction.measures["total"], rel=1e-3)
    # numbered head to feet (the array runs feet to head), z from the affine, 5 mm apart
    assert [a.number for a in prediction.per_slice] == [6, 5, 4, 3, 2, 1]
    z_mm = [a.z_mm for a in prediction.per_slice]
    assert all(z is not None for z in z_mm)
    assert np.diff(np.array(z_mm, dtype=float)) == pytest.approx([5.0] * 5)
    assert all(a.instance is None for a in prediction.per_slice)  # NIfTI has none
    summary = describe(prediction, model=predictor.model_info())
    assert summary.lung.per_slice == prediction.per_slice
    if prediction.involvement is not None:
        assert "ground_glass_ml" in prediction.involvement


def test_predict_shows_progress_over_inputs_and_slices_unless_quiet(
    tmp_path: Path, model: Path, capsys
) -> None:
    volume, _ = ct_volume(slices=6, size=64, lung_free=1)
    scan = write_nifti(tmp_path / "scan.nii.gz", volume.astype(np.int16))
    photo = write_png(tmp_path / "photo.png", display_slice(ct_slice(64)[0]))
    args = [str(scan), str(photo), "--out", str(tmp_path / "out"), "--model", str(model)]
    assert main(["predict", *args]) == 0
    shown = capsys.readouterr()
    assert "2/2" in shown.err and "input" in shown.err  # the bar over inputs
    assert "scan.nii.gz" in shown.err  # the scan's bar over its slices
    results = [line for line in shown.out.splitlines() if not line.startswith("  ")]
    assert [line.split(":")[0] for line in results] == [str(scan), str(photo)]
    assert main(["predict", *args, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and len(quiet.out.splitlines()) >= 2


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    rgb=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_png_writer_round_trips_any_grey_or_rgb_picture(
    rows: int, cols: int, rgb: bool, seed: int
) -> None:
    from lungseg.inference.encode import png_bytes

    shape = (rows, cols, 3) if rgb else (rows, cols)
    picture = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    data = png_bytes(picture)
    with Image.open(io.BytesIO(data)) as checked:
        checked.verify()  # chunk CRCs
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == ("RGB" if rgb else "L")
        assert np.array_equal(np.asarray(decoded), picture)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_label_pngs_round_trip_any_labels_with_their_palette(
    rows: int, cols: int, seed: int
) -> None:
    from lungseg.inference.encode import label_png_bytes

    labels = np.random.default_rng(seed).integers(0, 256, (rows, 2 * cols), dtype=np.uint8)
    labels = labels[:, ::2]  # a strided view, as a slice of a volume can be
    data = label_png_bytes(labels, {1: (1, 2, 3), 255: (7, 8, 9)})
    with Image.open(io.BytesIO(data)) as checked:
        checked.verify()  # chunk CRCs
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "P"
        palette = decoded.getpalette()
        assert np.array_equal(np.asarray(decoded), labels)
    assert palette is not None
    assert palette[:6] == [0, 0, 0, 1, 2, 3] and palette[-3:] == [7, 8, 9]


def test_label_pngs_refuse_what_is_not_a_2d_mask() -> None:
    from lungseg.inference.encode import label_png_bytes

    for shape in ((0, 4), (4, 4, 4)):
        with pytest.raises(ValueError, match="non-empty 2D"):
            label_png_bytes(np.zeros(shape, np.uint8), {})


def test_the_png_writer_takes_a_strided_view_and_refuses_four_channels() -> None:
    from lungseg.inference.encode import png_bytes

    picture = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)[:, ::2]
    with Image.open(io.BytesIO(png_bytes(picture))) as decoded:
        assert np.array_equal(np.asarray(decoded), picture)
    with pytest.raises(ValueError, match="3 channels"):
        png_bytes(np.zeros((4, 4, 4), np.uint8))
