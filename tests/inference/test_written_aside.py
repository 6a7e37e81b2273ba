"""Outputs are written aside and renamed: a write that fails half way (a full disk, a
killed process) leaves no half file under an output's name, and no hidden partial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import ct_volume, write_nifti

from lungseg.cli import main
from lungseg.inference import Predictor, save_prediction


def _disk_fills_after(monkeypatch: pytest.MonkeyPatch, good_writes: int) -> list[Path]:
    """``Path.write_bytes`` writes ``good_writes`` files whole, then half of the next and
    raises as a full disk does; returns the paths it was asked to write."""
    asked: list[Path] = []
    write = Path.write_bytes

    def filling(path: Path, data: bytes) -> int:  # type: ignore[override]
        asked.append(path)
        if len(asked) > good_writes:
            write(path, bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return write(path, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    return asked


@pytest.mark.parametrize("good_writes", [0, 1])
def test_a_disk_that_fills_leaves_no_half_written_output(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good_writes: int
) -> None:
    volume = ct_volume(slices=6, size=48)[0].astype(np.int16)
    result = predictor.predict(volume, spacing=(2.0, 0.7, 0.7))
    out = tmp_path / "out"
    out.mkdir()
    asked = _disk_fills_after(monkeypatch, good_writes)
    with pytest.raises(OSError, match="No space left"):
        save_prediction(result, out, "scan")
    monkeypatch.undo()
    assert len(asked) == good_writes + 1  # the fault was met
    left = sorted(p.name for p in out.iterdir())
    assert not [name for name in left if "partial" in name], left
    for path in out.iterdir():  # what is there is whole: it reads back
        if path.suffix == ".png":
            from PIL import Image

            Image.open(path).load()
    assert len(left) == good_writes


def test_predict_reports_a_full_disk_and_goes_on_with_nothing_half_written(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = ct_volume(slices=6, size=48)[0].astype(np.int16)
    scan = write_nifti(tmp_path / "scan.nii.gz", volume)
    out = tmp_path / "out"
    _disk_fills_after(monkeypatch, 1)
    code = main(["predict", str(scan), "--out", str(out), "--model", str(model), "--no-infection"])
    monkeypatch.undo()
    assert code == 1
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["scan_mask.nii.gz"]
