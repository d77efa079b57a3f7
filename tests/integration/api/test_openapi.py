"""The OpenAPI document is complete: every route has a 2xx schema and its problem answers."""

from __future__ import annotations

from typing import Any

from service.api import create_app
from service.storage import MemoryStorage
from service.telemetry import telemetry_router
from tests.integration.api._api import Session

METHODS = {"get", "put", "post", "delete", "patch"}


def _document() -> dict[str, Any]:
    from service.api import ApiContext

    # The document as the runtime serves it: with the telemetry package's router.
    return create_app(ApiContext(MemoryStorage()), routers=[telemetry_router(None)]).openapi()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_route_documents_its_success_and_problems() -> None:
    doc = _document()
    operations = _operations(doc)
    assert len(operations) >= 20
    problem_ref = "#/components/schemas/Problem"
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, where
        for code in success:
            if code == "204":
                continue
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema.get("$ref") or schema.get("type"), where
        if path != "/api/v1/health":
            for code in ("401", "403", "422"):
                content = responses[code]["content"]
                assert content["application/problem+json"]["schema"]["$ref"] == problem_ref, where
            assert operation.get("security"), f"{where} declares no bearer security"
    assert "Problem" in doc["components"]["schemas"]
    assert {"HTTPBearer"} <= set(doc["components"]["securitySchemes"])


def test_contract_routes_are_all_there() -> None:
    paths = set(_document()["paths"])
    expected = {
        "/api/v1/health",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/jobs",
        "/api/v1/devices/sync",
        "/api/v1/groups",
        "/api/v1/groups/{group_id}",
        "/api/v1/groups/{group_id}/members",
        "/api/v1/releases",
        "/api/v1/releases/{release_id}",
        "/api/v1/releases/{release_id}/artifacts/{core}",
        "/api/v1/releases/{release_id}/publish",
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}",
        "/api/v1/rollouts/{rollout_id}/jobs",
        "/api/v1/rollouts/{rollout_id}/commands",
        "/api/v1/audit",
        "/api/v1/audit/verify",
        "/api/v1/tokens",
        "/api/v1/tokens/{token_id}",
        "/api/v1/rollouts/{rollout_id}/verdicts",
        "/api/v1/telemetry/summary",
        "/api/v1/telemetry/devices/{device_id}",
        "/api/v1/telemetry/dead-letters",
        "/api/v1/telemetry/stats",
    }
    assert expected <= paths, expected - paths


def test_openapi_is_served_without_a_token(session: Session) -> None:
    answer = session.api.get("/openapi.json", token=None)
    assert answer.status_code == 200
    assert answer.json()["info"]["title"] == "tinyfleet"


def test_unknown_route_and_method_are_problems(session: Session) -> None:
    missing = session.api.get("/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not-found"
    wrong = session.api.request("PATCH", "/groups")
    assert wrong.status_code == 405
    assert wrong.json()["status"] == 405
