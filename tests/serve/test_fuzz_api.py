"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis), bounded.

Whatever schemathesis sends (random multipart bodies, odd query values), the
server answers without a 5xx.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from models import dark_is_lung_onnx
from schemathesis.checks import not_a_server_error

from lungseg.inference import Predictor
from lungseg.serve.app import ServeSettings, create_app

_MODEL = dark_is_lung_onnx(Path(tempfile.mkdtemp(prefix="lungseg-fuzz-")) / "model.onnx")
app = create_app(ServeSettings(max_slice_mb=1.0, max_volume_mb=1.0), Predictor(_MODEL))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
