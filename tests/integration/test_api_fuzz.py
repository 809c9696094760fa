"""The progress API fuzzed from its own OpenAPI document (schemathesis), in-process against the ASGI app with
seeded data: whatever the generated parameters (valid and invalid), no answer is a 5xx, every answer's status is
documented and every body matches its documented schema.

Run as an admin (reads every user id, so generated ids reach the ClickHouse queries) and as a learner (most
generated ids then end in the authorization rule). A bounded number of examples per operation keeps it short.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import ApiSettings
from runtime.settings import PlatformSettings
from tests.analytics_fixtures import ApiWorld, seed_api_world

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_world(migrated_stack: PlatformSettings) -> ApiWorld:
    return seed_api_world(PlatformSettings(clickhouse_database="api_fuzz"), f"fz-{uuid.uuid4().hex[:6]}-", days=21)


@pytest.fixture(scope="module")
def api_schema(fuzz_world: ApiWorld) -> Iterator[Any]:
    """The schema loaded from the running app (its lifespan open for the module)."""
    app = create_app(fuzz_world.platform, ApiSettings())
    with TestClient(app):
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


_SPEC = create_app().openapi()
CASES = [
    (path, method.upper(), mode, caller)
    for path, item in _SPEC["paths"].items()
    for method, operation in item.items()
    # negative data needs something to break: operations without parameters only get positive cases
    for mode in (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if operation.get("parameters") else [GenerationMode.POSITIVE]
    )
    for caller in ("admin", "learner")
]
FUZZ_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.mark.parametrize(("path", "method", "mode", "caller"), CASES, ids=[f"{m} {p} {g} {c}" for p, m, g, c in CASES])
def test_no_server_errors(
    api_schema: Any, fuzz_world: ApiWorld, path: str, method: str, mode: GenerationMode, caller: str
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {fuzz_world.tokens[caller]}"}

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    fuzz()
