"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis), bounded.

Whatever schemathesis sends (random multipart bodies, odd query values), the
server answers without a 5xx. The schema comes from the application without its
model (cheap, at import); a fixture gives it a tiny model in pytest's temporary
folder, so nothing is built at import and nothing is left in /tmp.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from models import dark_is_lung_onnx
from schemathesis.checks import not_a_server_error

from lungseg.inference import Predictor
from lungseg.serve.answers import Service
from lungseg.serve.app import ServeSettings, application

SETTINGS = ServeSettings(max_slice_mb=1.0, max_volume_mb=1.0)
app = application(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    model = dark_is_lung_onnx(tmp_path_factory.mktemp("fuzz") / "model.onnx")
    app.state.service = Service.start(SETTINGS, Predictor(model))
    yield
    del app.state.service


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
