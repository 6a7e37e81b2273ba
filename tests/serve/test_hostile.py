"""The hostile corpus (``tests/hostile_corpus.py``) through the API and the CLI: every
case is handled, a refusal is a clear 4xx or one CLI line, an odd valid input a result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hostile_corpus import Case, build
from models import dark_is_lung_onnx

from lungseg.cli import main
from lungseg.inference import Predictor
from lungseg.serve.app import ServeSettings, create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dark_is_lung_onnx(tmp_path_factory.mktemp("model") / "m.onnx")


def test_every_case_through_the_api(corpus: list[Case], model: Path) -> None:
    client = TestClient(create_app(ServeSettings(), Predictor(model)))
    wrong = []
    for case in corpus:
        response = client.post(
            f"/api/v1/{case.endpoint}",
            files={"file": (case.upload_name, Path(case.upload).read_bytes())},
        )
        good = (
            response.status_code == 200
            if case.expect == "ok"
            else 400 <= response.status_code < 500
        )
        if case.expect == "refused" and good:
            good = bool(response.json().get("error"))
        if not good:
            wrong.append(f"{case.name}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_every_case_through_the_cli(
    corpus: list[Case], model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [c for c in corpus if c.path is not None]
    out = tmp_path / "out"
    code = main(
        ["predict", *(c.path for c in cases), "--out", str(out), "--model", str(model), "--json"]
    )
    assert code == 1  # some inputs are refused
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == len(cases)
    wrong = [
        f"{case.name}: {record}"
        for case, record in zip(cases, records, strict=True)
        if _refused(record) != (case.expect_from_cli == "refused")
    ]
    assert not wrong, "\n".join(wrong)
    assert "Traceback" not in captured.err
    failures = [
        line
        for line in captured.err.splitlines()
        if line.startswith(("lungseg: failed", "lungseg: refused"))
    ]
    assert len(failures) == sum(c.expect_from_cli == "refused" for c in cases)
    assert not any("unexpected error" in line for line in failures)
    assert not list(out.glob("*partial*"))


def _refused(record: dict) -> bool:
    """A record of an input the CLI could not read (``error``) or refused (its check)."""
    return "error" in record or record.get("check", {}).get("status") == "refused"
