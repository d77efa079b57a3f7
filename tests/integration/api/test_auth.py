"""Authentication and roles: one row per refusal, and the problem+json shape of each."""

from __future__ import annotations

from typing import Any

import pytest

from service.storage import Role
from tests.integration.api._api import PROBLEM, Session

GROUP = {"name": "Berlin", "kind": "tag", "selector": "site=berlin"}

# (id, method, path, body, role or a special token, expected status, expected code)
ROWS: list[tuple[str, str, str, dict[str, Any] | None, Any, int, str]] = [
    ("no-token", "GET", "/devices", None, None, 401, "unauthorized"),
    ("unknown-token", "GET", "/devices", None, "tft_not-a-token", 401, "unauthorized"),
    ("empty-bearer", "GET", "/groups", None, "", 401, "unauthorized"),
    ("revoked-token", "GET", "/devices", None, "revoked", 401, "unauthorized"),
    ("viewer-puts-group", "PUT", "/groups/g1", GROUP, Role.VIEWER, 403, "forbidden"),
    ("viewer-syncs", "POST", "/devices/sync", None, Role.VIEWER, 403, "forbidden"),
    ("viewer-commands", "POST", "/rollouts/r1/commands", {"command": "start"}, Role.VIEWER, 403,
     "forbidden"),
    ("operator-creates-release", "POST", "/releases",
     {"id": "r", "hardware_ids": ["mt3620"], "counter": 1}, Role.OPERATOR, 403, "forbidden"),
    ("operator-lists-tokens", "GET", "/tokens", None, Role.OPERATOR, 403, "forbidden"),
    ("signer-creates-token", "POST", "/tokens", {"name": "x", "role": "admin"},
     Role.RELEASE_SIGNER, 403, "forbidden"),
    ("operator-revokes-token", "DELETE", "/tokens/x", None, Role.OPERATOR, 403, "forbidden"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "who", "status", "code"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_refused(
    session: Session,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    who: Any,
    status: int,
    code: str,
) -> None:
    world, api = session.world, session.api
    if who == "revoked":
        secret = world.issue("leaver", Role.ADMIN)
        tokens = api.get("/tokens").json()["items"]
        token_id = next(t["id"] for t in tokens if t["name"] == "leaver")
        assert api.delete(f"/tokens/{token_id}").status_code == 204
        token: Any = secret
    elif isinstance(who, Role):
        token = world.tokens[who]
    else:
        token = who
    answer = api.request(method, path, json=body, token=token)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"https://tinyfleet.dev/problems/{code}"
    assert problem["title"] and problem["detail"]
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


def test_nothing_changes_on_a_refused_request(session: Session) -> None:
    api, world = session.api, session.world
    before = api.get("/audit").json()["items"]
    api.put("/groups/g1", json=GROUP, token=world.tokens[Role.VIEWER])
    assert api.get("/groups/g1").status_code == 404
    assert api.get("/audit").json()["items"] == before


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_every_role_reads(session: Session, role: Role) -> None:
    answer = session.api.get("/devices", token=session.world.tokens[role])
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.VIEWER, False), (Role.OPERATOR, True), (Role.RELEASE_SIGNER, True), (Role.ADMIN, True)],
    ids=lambda v: v.value if isinstance(v, Role) else str(v),
)
def test_roles_include_the_ones_before(session: Session, role: Role, allowed: bool) -> None:
    answer = session.api.put("/groups/g1", json=GROUP, token=session.world.tokens[role])
    assert answer.status_code == (200 if allowed else 403)


def test_health_needs_no_token(session: Session) -> None:
    answer = session.api.get("/health", token=None)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["storage"] and body["engine"] and body["hub"]
