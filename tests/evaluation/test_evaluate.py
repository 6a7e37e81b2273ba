from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from models import dark_is_lung_onnx
from synthetic import ct_volume, write_dicom_series, write_finding_lungs_like

from lungseg.cli import main
from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.evaluation.evaluate import evaluate
from lungseg.imaging import read_image
from lungseg.inference.model import SegmentationModel, segment_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    source = write_finding_lungs_like(root / "finding", count=8, size=64)
    build_dataset(BuildConfig(sources=[str(source)], fractions=(0.5, 0.25, 0.25)), root / "dataset")
    return root / "dataset"


def test_orientations_and_renderings_tell_a_threshold_from_a_segmenter(
    dataset: Path, tmp_path: Path
) -> None:
    """A threshold stand-in is perfect on HU in every orientation and on lung-window
    pictures, and the renderings table shows it fail where a threshold must: a soft-tissue
    window makes the lungs as black as the air around the body."""
    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    result = evaluate(model, dataset, "test", tmp_path / "report")
    stats = result.summary["sources"]["finding"]
    assert stats["slices"] == 2
    assert stats["dice"]["mean"] == pytest.approx(1.0, abs=1e-3)
    for name in ("rot90", "rot180", "mirror+upright", "mirror+rot270"):
        assert stats["variants"][name]["mean_dice"] == pytest.approx(1.0, abs=0.02), name
    for name in ("lung_window.png", "lung_window.jpg", "original_exporter.png"):
        assert stats["variants"][name]["mean_dice"] > 0.95, name
    assert stats["variants"]["soft_tissue.png"]["mean_dice"] < 0.9
    # sides by position are right upright and wrong when mirrored
    assert stats["sides_correct"]["upright"] == 1.0
    assert stats["sides_correct"]["mirror+upright"] == 0.0
    # Without the body mask the air around the patient counts as lung.
    assert stats["dice_no_postprocess"]["mean"] < 0.8
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Renderings" in report and "soft_tissue" in report
    assert "right/left sides" in report
    assert (tmp_path / "report" / "worst_renderings.png").exists()
    assert (tmp_path / "report" / "best_worst_finding.png").exists()
    assert (
        len(
            json.loads((tmp_path / "report" / "summary.json").read_text())["sources"]["finding"][
                "worst5"
            ]
        )
        == 2
    )


def test_the_report_scores_pictures_as_photos_turned_upright_by_the_orientation_head(
    dataset: Path, tmp_path: Path
) -> None:
    """A stand-in whose orientation head says every picture is mirrored: the mirrored
    pictures are then segmented upright, so their sides (by position in the stand-in)
    come out right and the upright ones' wrong; the report counts the turns found."""
    from models import sided_and_turned_onnx

    from lungseg.imaging.orientation import DIHEDRAL

    model = sided_and_turned_onnx(tmp_path / "m.onnx", DIHEDRAL.index((0, True)))
    result = evaluate(model, dataset, "test", tmp_path / "report")
    stats = result.summary["sources"]["finding"]
    assert stats["sides_correct"]["mirror+upright"] == 1.0
    assert stats["sides_correct"]["upright"] == 0.0
    assert stats["turn_found"]["mirror+upright"] == 1.0
    assert stats["turn_found"]["upright"] == 0.0 and stats["turn_found"]["rot90"] == 0.0
    assert (
        "whose turn the orientation head finds" in (tmp_path / "report" / "report.md").read_text()
    )


def test_a_wrong_model_scores_low(dataset: Path, tmp_path: Path) -> None:
    import torch

    from lungseg.training.export import export_onnx

    class Nothing(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.cat([image * 0 + 5, image * 0 - 5], dim=1)

    path = export_onnx(Nothing(), tmp_path / "nothing.onnx", 64)
    result = evaluate(path, dataset, "test", tmp_path / "report", variants=False)
    assert result.summary["sources"]["finding"]["dice"]["mean"] == 0.0


def test_a_whole_scan_level_by_level(dataset: Path, tmp_path: Path) -> None:
    hu, lungs = ct_volume(slices=6, size=64, lung_free=1)
    write_dicom_series(tmp_path / "scan", hu)
    model_path = dark_is_lung_onnx(tmp_path / "model.onnx")
    predicted = segment_image(
        SegmentationModel(model_path),
        read_image(tmp_path / "scan"),
    )
    np.testing.assert_array_equal(predicted != 0, lungs > 0)
    code = main(
        [
            "evaluate",
            "--model",
            str(model_path),
            "--data",
            str(dataset),
            "--out",
            str(tmp_path / "r"),
            "--scan",
            str(tmp_path / "scan"),
            "--no-variants",
        ]
    )
    assert code == 0
    series = json.loads((tmp_path / "r" / "series.json").read_text())
    assert series["lung_free_slices_by_threshold"] == 2
    assert series["of_those_predicted_empty"] == 2
    assert (tmp_path / "r" / "series_levels.png").exists()


def test_missing_model_is_a_clear_error(dataset: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "none.onnx"),
            "--data",
            str(dataset),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "no such model file" in capsys.readouterr().err


def test_the_apex_and_base_levels_are_the_first_and_last_fifth() -> None:
    from lungseg.evaluation.apex_base import end_levels

    assert end_levels(10) == [0, 1, 8, 9]
    assert end_levels(11) == [0, 1, 2, 8, 9, 10]
    assert end_levels(3) == [0, 2]
    assert end_levels(1) == [0] and end_levels(0) == []


def test_the_apex_and_base_of_a_scan_are_scored_as_single_pictures(
    dataset: Path, tmp_path: Path
) -> None:
    """Each apex and base level of the scan is sent alone in every orientation and
    rendering: the threshold stand-in is right upright and in the lung window, and fails
    in the soft-tissue window (lungs as black as the air), as on mid-lung slices; the
    lowest way is reported; the report has the section."""
    hu, _ = ct_volume(slices=12, size=64, lung_free=1)
    write_dicom_series(tmp_path / "scan", hu)
    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    result = evaluate(model, dataset, "test", tmp_path / "report", scan=tmp_path / "scan")
    scan = result.summary["apex_base"]["scan"]
    assert scan["slices"] == 4  # 10 lung-bearing levels: 2 at each end
    assert scan["ways"]["upright"]["mean_dice"] > 0.97
    assert scan["ways"]["lung_window.png"]["mean_dice"] > 0.95
    assert scan["ways"]["soft_tissue.png"]["mean_dice"] < 0.9
    assert scan["lowest_mean_dice"] == min(w["mean_dice"] for w in scan["ways"].values())
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Apex and base of single slices" in report


def test_covid_free_slices_count_every_finding_as_a_false_positive(tmp_path: Path) -> None:
    """Routine CT from before 2020 (finding-lungs-ct): a stand-in that calls every dark
    pixel ground glass marks all of each lung, so none of those slices scores severity 0;
    the report shows the most marked."""
    from models import lungs_and_infection_onnx
    from synthetic import write_medseg_like

    from lungseg.evaluation.infection import evaluate_infection

    sources = [
        str(write_finding_lungs_like(tmp_path / "finding-lungs-ct", count=6, size=64)),
        str(write_medseg_like(tmp_path / "medseg", count=6, size=64)),
    ]
    build_dataset(BuildConfig(sources=sources, fractions=(0.5, 0.25, 0.25)), tmp_path / "data")
    summary = evaluate_infection(
        lungs_and_infection_onnx(tmp_path / "both.onnx"), tmp_path / "data", tmp_path / "report"
    )
    free = summary["covid_free"]
    assert free["slices"] == 6
    assert free["severity_0"] == 0.0 and free["over_5_percent"] == 1.0
    assert (tmp_path / "report" / "covid_free_most_involved.png").exists()
    assert "## COVID-free routine CT" in (tmp_path / "report" / "infection_report.md").read_text()
