"""``lungseg evaluate`` on the core install: no OpenCV, torch, MONAI, Lightning or onnx.

The extras are present in the test environment, so a fresh interpreter is started with
an import hook that refuses them, as a machine with ``pip install lungseg`` would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from models import dark_is_lung_onnx
from synthetic import write_finding_lungs_like

from lungseg.dataset.build import BuildConfig, build_dataset
from lungseg.imaging.render import clahe

EXTRAS = ("cv2", "torch", "monai", "pytorch_lightning", "lightning", "onnx", "skimage", "dask")

CORE_ONLY = textwrap.dedent(
    f"""
    import sys

    class Extras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRAS!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (core install)")
            return None

    sys.meta_path.insert(0, Extras())
    from lungseg.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_evaluate_runs_without_the_training_extras(tmp_path: Path) -> None:
    source = write_finding_lungs_like(tmp_path / "finding", count=8, size=64)
    build_dataset(
        BuildConfig(sources=[str(source)], fractions=(0.5, 0.25, 0.25)), tmp_path / "data"
    )
    model = dark_is_lung_onnx(tmp_path / "model.onnx")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            CORE_ONLY,
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "data"),
            "--split",
            "test",
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    variants = summary["sources"]["finding"]["variants"]
    assert "clahe_256.png" in variants and "clahe_256.jpg" in variants  # every rendering
    # and the hook does refuse them: the same interpreter cannot train
    refused = subprocess.run(
        [
            sys.executable,
            "-c",
            CORE_ONLY,
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "core install" in refused.stdout + refused.stderr


def test_clahe_is_opencvs_pixel_for_pixel() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for shape in [(512, 512), (256, 256), (100, 77), (513, 300), (9, 9)]:
        noise = rng.integers(0, 256, shape, dtype=np.uint8)
        ramp = np.linspace(0, 255, shape[0] * shape[1]).reshape(shape).astype(np.uint8)
        lungs = (
            np.where(
                np.hypot(*np.indices(shape) - np.array(shape)[:, None, None] / 2) < min(shape) / 3,
                20,
                180,
            ).astype(np.uint8)
            + noise // 16
        )
        for picture in (noise, ramp, lungs, np.zeros(shape, np.uint8)):
            for clip in (0.0, 2.0, 7.0, 10.0, 40.0):
                expected = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(picture)
                np.testing.assert_array_equal(
                    clahe(picture, clip), expected, err_msg=f"{shape} {clip}"
                )
