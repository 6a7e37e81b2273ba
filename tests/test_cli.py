from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import write_finding_lungs_like

from lungseg.cli import main


def test_dataset_build_command(tmp_path: Path, capsys) -> None:
    source = write_finding_lungs_like(tmp_path / "finding", count=4)
    code = main(
        [
            "dataset",
            "build",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--fractions",
            "0.5,0.25,0.25",
        ]
    )
    assert code == 0
    assert "4 slices stored" in capsys.readouterr().out
    assert (tmp_path / "out" / "report" / "report.md").exists()


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = main(["dataset", "build", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("lungseg: error:")
    assert "no such folder" in err
    assert not (tmp_path / "out").exists()


def test_installed_command_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lungseg", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "dataset" in result.stdout


def test_make_run_installs_the_core_only(tmp_path: Path) -> None:
    """`make run` on a fresh machine: no torch, no Playwright (the dry run's commands)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    plan = subprocess.run(
        [make, "-n", "run", f"VENV={tmp_path / 'venv'}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e ."]
    assert "lungseg serve" in plan


def test_serving_and_predicting_need_only_the_core(tmp_path: Path) -> None:
    """What `make run` installs is enough: the app, a prediction and the CLI import no
    training package (torch, MONAI, Lightning, OpenCV, ONNX)."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from lungseg.cli import build_parser
from lungseg.serve.app import ServeSettings, create_app
import numpy as np
from PIL import Image
sys.path.insert(0, {str(Path(__file__).parent)!r})
from synthetic import ct_slice, display_slice
Image.fromarray(display_slice(ct_slice(256)[0])).save({str(tmp_path / "a.png")!r})
client = TestClient(create_app(ServeSettings()))
answer = client.post("/api/v1/segment", files={{"file": open({str(tmp_path / "a.png")!r}, "rb")}})
# the model ran: an answer, or a refusal after its look (a phantom is no patient)
assert answer.status_code == 200 or answer.json()["check"]["status"] == "refused", answer.text
training = {{"torch", "monai", "pytorch_lightning", "cv2", "onnx", "tensorboard"}}
print(sorted(training & {{name.split(".")[0] for name in sys.modules}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_importing_inference_loads_neither_torch_nor_the_dataset_stage() -> None:
    script = """
import sys
import lungseg.inference
print(sorted(n for n in ("torch", "monai", "matplotlib", "lungseg.dataset", "lungseg.dataset.build",
    "lungseg.training", "lungseg.evaluation") if n in sys.modules))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr
