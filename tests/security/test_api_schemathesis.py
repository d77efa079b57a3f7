"""schemathesis against the app's own OpenAPI document, with every role's token and none: no
generated request may get a 5xx (503 included: every part is configured here, so "unavailable"
would be a bug) or a status code the document does not list for its operation.

Bounded and repeatable: a few derandomized examples per operation and role, no deadline, no
example database; the whole file runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, status_code_conformance

from service.api import ApiContext, create_app
from service.storage import MemoryStorage, Role
from service.telemetry import telemetry_router
from tests.integration.api._api import ApiWorld
from tests.security._api_world import full_api

EXAMPLES = 8
METHODS = ("get", "put", "post", "delete", "patch")
ROLES: list[Role | None] = [*Role, None]
CHECKS = [not_a_server_error, status_code_conformance]


def _operations() -> list[tuple[str, str]]:
    doc = create_app(ApiContext(MemoryStorage()), routers=[telemetry_router(None)]).openapi()
    return [
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    ]


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiWorld, Any]]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with full_api(tmp) as (world, _api):
        world.seed_devices(3)
        world.seed_release("rel-0")
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", world.app)
        yield world, schema


@pytest.mark.parametrize("role", ROLES, ids=[r.value if r else "no-token" for r in ROLES])
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_generated_requests_get_documented_answers(
    target: tuple[ApiWorld, Any], path: str, method: str, role: Role | None
) -> None:
    world, schema = target
    operation = schema[path][method]
    headers = {} if role is None else {"Authorization": f"Bearer {world.tokens[role]}"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        # A failure is schemathesis' FailureGroup; hypothesis shrinks it and reports the case.
        case.validate_response(case.call(headers=headers), checks=CHECKS)

    run()
