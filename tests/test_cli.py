from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
