from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from models import dark_is_ground_glass_onnx, lungs_and_infection_onnx, sided_onnx
from PIL import Image
from synthetic import ct_slice, display_slice, write_png

from lungseg.cli import main
from lungseg.core.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    LUNG_LEFT,
    LUNG_RIGHT,
    PLEURAL_EFFUSION,
)
from lungseg.inference import Predictor
from lungseg.inference.infection import involvement, restrict_to_lung, severity_score
from lungseg.serve.app import ServeSettings, create_app


def test_involvement_per_lung_and_outside_lung_ignored() -> None:
    lung = np.zeros((10, 20), np.uint8)
    lung[:, :8] = LUNG_RIGHT  # 80 pixels
    lung[:, 12:] = LUNG_LEFT  # 80 pixels
    infection = np.zeros_like(lung)
    infection[:5, :8] = GROUND_GLASS  # half the right lung
    infection[5:6, :4] = CONSOLIDATION  # 4 more pixels of it
    infection[:, 9:11] = GROUND_GLASS  # between the lungs: not lung, dropped
    infection[9, 10] = PLEURAL_EFFUSION  # outside the lung: kept
    infection = restrict_to_lung(infection, lung)
    assert not np.isin(infection[:, 8:12], (GROUND_GLASS, CONSOLIDATION)).any()
    result = involvement(lung, infection)
    assert result["share"] == {
        "right": pytest.approx(44 / 80),
        "left": 0.0,
        "total": pytest.approx(44 / 160),
    }
    assert result["severity"] == {"right": 4, "left": 0, "total": 4}
    assert result["effusion_px"] == 1


def test_empty_lung_has_no_involvement() -> None:
    result = involvement(np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8))
    assert result["share"] == {"right": 0.0, "left": 0.0, "total": 0.0}
    assert result["severity"]["total"] == 0


@pytest.mark.parametrize(
    ("share", "score"),
    [
        (0.0, 0),
        (0.009, 0),
        (0.01, 1),
        (0.05, 1),
        (0.06, 2),
        (0.25, 2),
        (0.3, 3),
        (0.6, 4),
        (0.8, 5),
    ],
)
def test_severity_scale(share: float, score: int) -> None:
    assert severity_score(share) == score


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor(lungs_and_infection_onnx(tmp_path_factory.mktemp("models") / "both.onnx"))


def test_predictor_reports_infection_inside_the_lungs(tmp_path: Path, predictor: Predictor) -> None:
    hu, lungs = ct_slice(64)
    result = predictor.predict(write_png(tmp_path / "s.png", display_slice(hu)))
    assert result.infection is not None
    np.testing.assert_array_equal(
        result.infection == GROUND_GLASS, lungs > 0
    )  # the air outside is not lung
    assert result.involvement is not None
    assert result.involvement["severity"] == {"right": 5, "left": 5, "total": 10}


def test_predict_and_api_carry_infection(tmp_path: Path, predictor: Predictor, capsys) -> None:
    hu, _ = ct_slice(64)
    path = write_png(tmp_path / "s.png", display_slice(hu))
    models = ["--model", str(predictor.model.path)]
    assert main(["predict", str(path), "--out", str(tmp_path / "out"), *models, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["involvement"]["severity"]["total"] == 10
    assert (tmp_path / "out" / "s_infection.png").exists()
    plain = [
        "predict",
        str(path),
        "--out",
        str(tmp_path / "plain"),
        "--model",
        str(predictor.model.path),
    ]
    assert main([*plain, "--no-infection", "--json"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert without["involvement"] is None and without["lung"]["total"] > 0
    client = TestClient(create_app(ServeSettings(), predictor))
    data = client.post("/api/v1/segment", files={"file": ("s.png", path.read_bytes())}).json()
    # one shape: the API's answer is the CLI's record plus pictures
    assert set(record) - {"outputs"} <= set(data)
    assert data["involvement"]["severity"]["total"] == 10
    infection = np.array(Image.open(io.BytesIO(base64.b64decode(data["infection_png"]))))
    assert set(np.unique(infection)) == {0, GROUND_GLASS}


def test_volume_involvement_overall_and_per_slice(tmp_path: Path, predictor: Predictor) -> None:
    from synthetic import ct_volume, write_nifti

    hu, _ = ct_volume(slices=6, size=64, lung_free=1)
    result = predictor.predict(write_nifti(tmp_path / "scan.nii.gz", hu))
    assert result.involvement is not None
    per_slice = result.involvement["per_slice"]
    assert len(per_slice) == 6
    assert per_slice[0] == {"right": 0.0, "left": 0.0, "total": 0.0}  # no lung on the first slice
    assert per_slice[3]["total"] == pytest.approx(
        1.0
    )  # the stand-in model calls all lung ground glass
    assert result.involvement["severity"]["total"] == 10
    # all lung is ground glass here: every zone of each lung fully involved, and the
    # involved mL are the lung volumes
    assert result.involvement["zones"] == {
        side: {"upper": 1.0, "middle": 1.0, "lower": 1.0} for side in ("right", "left")
    }
    assert result.involvement["involved_ml"]["total"] == pytest.approx(
        result.measures["total"], rel=1e-3
    )
    assert "not a diagnosis" in result.involvement["trained_on"]


def test_zones_split_each_lung_in_thirds_by_height() -> None:
    from lungseg.inference.infection import joint_counts, zone_shares

    lung = np.zeros((9, 8, 8), np.uint8)
    lung[:, :, :4] = LUNG_RIGHT  # nine slices of right lung
    lung[3:6, :, 4:] = LUNG_LEFT  # the left lung spans three slices
    infection = np.zeros_like(lung)
    infection[6:, :, :2] = GROUND_GLASS  # right lung: the top third (slices 6-8), half of it
    infection[3, :, 4:] = CONSOLIDATION  # left lung: its lowest slice, all of it
    zones = zone_shares(joint_counts(lung, infection))
    assert zones["right"] == {"upper": 0.5, "middle": 0.0, "lower": 0.0}
    assert zones["left"] == {"upper": 0.0, "middle": 0.0, "lower": 1.0}


def test_a_lung_involved_below_the_floor_scores_zero() -> None:
    lung = np.full((100, 100), LUNG_RIGHT, np.uint8)
    lung[:, 50:] = LUNG_LEFT
    infection = np.zeros_like(lung)
    infection[:5, :5] = GROUND_GLASS  # 25 of 5000 px: 0.5 % of the right lung, a nodule's worth
    infection[:, 50:60] = GROUND_GLASS  # 20 % of the left lung
    result = involvement(lung, infection)
    assert result["share"]["right"] == pytest.approx(0.005)
    assert result["severity"] == {"right": 0, "left": 2, "total": 2}


def test_infection_comes_from_the_one_pass_only(tmp_path: Path, predictor: Predictor) -> None:
    """One way to infection: the network's own infection head, in the pass that finds the
    lungs. A lung network gives none; a network of infection alone is refused with the
    reason; the same network with infection off gives the same lungs and no findings."""
    from lungseg.errors import LungsegError

    assert predictor.infection_head
    hu, lungs = ct_slice(64)
    picture = write_png(tmp_path / "s.png", display_slice(hu))
    both = predictor.predict(picture)
    assert both.infection is not None
    np.testing.assert_array_equal(both.infection == GROUND_GLASS, lungs > 0)
    off = Predictor(predictor.model.path, infection=False).predict(picture)
    assert off.infection is None and off.involvement is None
    np.testing.assert_array_equal(off.lung, both.lung)
    lung_only = Predictor(sided_onnx(tmp_path / "lung.onnx"))
    assert not lung_only.infection_head and lung_only.predict(picture).infection is None
    with pytest.raises(LungsegError, match="'infection' alone; lungseg predicts with one"):
        Predictor(dark_is_ground_glass_onnx(tmp_path / "infection.onnx"))
