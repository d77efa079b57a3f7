"""Hostile input through the real app: every row must be a 4xx `application/problem+json`
answer that names the bad field, never a 500 or a 503 carrying internals (SQL, tracebacks).

Rows are one attack each: numbers past 64 bits, digits from other scripts, times at the edge of
the calendar once converted to UTC, control characters in path ids and names (which used to
reach logs and terminals raw), JSON nested far too deep, oversized selector expressions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from service.storage import Release, Role
from tests.contract.storage.pg import postgres_server, scratch_database
from tests.integration.api._api import PROBLEM, Api, ApiWorld
from tests.security._api_world import full_api

BIG = str(2**64)
HUGE = "9" * 400
ARABIC = "\u0661\u0662\u0663"  # ١٢٣
DEVANAGARI = "\u0967\u0968"  # १२
MIN_PLUS = "0001-01-01T00:00:00%2B01:00"
MAX_MINUS = "9999-12-31T23:59:59-01:00"
DEEP_LIST = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
NESTED_40 = '{"a":' * 40 + "1" + "}" * 40
INTERNALS = ("Traceback", "SELECT", "sqlalchemy", "OverflowError", "RecursionError", 'File "')


def _group(selector: str, name: str = "g", kind: str = "query") -> dict[str, Any]:
    return {"name": name, "kind": kind, "selector": selector}


def _rollout(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "r1",
        "release_id": "rel-1",
        "group_id": "g1",
        "stages": [{"name": "canary", "count": 1}],
    }
    body.update(over)
    return body


def _upload(metadata: str) -> dict[str, Any]:
    return {"files": {"file": ("m.tflite", b"\0" * 64)}, "data": {"metadata": metadata}}


# (method, url, request kwargs, expected status)
ROWS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", f"/audit?after_seq={BIG}", {}, 422),
    ("GET", f"/audit?after_seq={HUGE}", {}, 422),
    ("GET", f"/audit?after_seq={ARABIC}", {}, 422),
    ("GET", f"/audit?limit={DEVANAGARI}", {}, 422),
    ("GET", f"/telemetry/dead-letters?after={BIG}", {}, 422),
    ("GET", "/telemetry/dead-letters?after=9223372036854775808", {}, 422),
    ("GET", f"/telemetry/dead-letters?after={ARABIC}", {}, 422),
    ("GET", "/devices?after=dev-001%0AINFO%20forged", {}, 422),
    ("GET", f"/devices?after={HUGE}99", {}, 422),
    ("GET", f"/devices?limit={BIG}", {}, 422),
    ("GET", f"/devices?last_seen_after={MIN_PLUS}", {}, 422),
    ("GET", f"/devices?last_seen_after={MAX_MINUS}", {}, 422),
    ("GET", "/devices?last_seen_after=2026-01-01T00:00:00", {}, 422),
    ("GET", f"/telemetry/summary?since={MIN_PLUS}", {}, 422),
    ("GET", f"/telemetry/summary?until={MAX_MINUS}", {}, 422),
    ("GET", f"/telemetry/devices/d1?since={MIN_PLUS}", {}, 422),
    ("POST", "/rollouts", {"json": _rollout(start_at="9999-12-31T23:59:59-01:00")}, 422),
    ("GET", "/devices/a%0AINFO%20service:%20forged", {}, 422),
    ("GET", "/devices/a%1B%5B31m/jobs", {}, 422),
    ("GET", "/devices/a%E2%80%AEb", {}, 422),
    ("GET", "/groups/a%0Db", {}, 422),
    ("GET", "/rollouts/a%00b", {}, 422),
    ("GET", "/rollouts/a%0Ab/verdicts", {}, 422),
    ("GET", "/releases/a%0Ab", {}, 422),
    ("DELETE", "/tokens/a%0Ab", {}, 422),
    ("GET", "/telemetry/devices/a%0Ab", {}, 422),
    ("GET", "/devices?tag=site%3D%1B%5D0%3Bx%07", {}, 422),
    ("GET", "/rollouts?group_id=a%0Ab", {}, 422),
    (
        "POST",
        "/rollouts",
        {"content": DEEP_LIST, "headers": {"content-type": "application/json"}},
        400,
    ),
    (
        "POST",
        "/rollouts",
        {"content": DEEP_OBJECT, "headers": {"content-type": "application/json"}},
        400,
    ),
    ("POST", "/rollouts", {"json": _rollout(gate=json.loads(NESTED_40))}, 422),
    ("PUT", "/releases/rel-1/artifacts/m4-0", _upload(DEEP_LIST), 422),
    ("PUT", "/releases/rel-1/artifacts/m4-0", _upload(DEEP_OBJECT), 422),
    ("PUT", "/releases/rel-1/artifacts/m4-0", _upload(NESTED_40), 422),
    ("PUT", "/groups/g1", {"json": _group("(" * 400 + "hardware_id=x" + ")" * 400)}, 422),
    ("PUT", "/groups/g1", {"json": _group(" and ".join(["(tags.a=1 or (tags.b=2"] * 60))}, 422),
    ("PUT", "/groups/g1", {"json": _group("hardware_id=" + "x" * 5000)}, 422),
    ("PUT", "/groups/g1", {"json": _group("tags.site=oslo\nx")}, 422),
    ("PUT", "/releases/rel-1/artifacts/m4-0", _upload('{"kind": "model", "n": "a\\u0000"}'), 422),
    ("POST", "/rollouts", {"json": _rollout(gate={"a\x00": 1})}, 422),
    (
        "POST",
        "/releases",
        {"json": {"id": "r", "hardware_ids": ["x"], "counter": 1, "description": "a\x00b"}},
        422,
    ),
    ("POST", "/rollouts/r1/commands", {"json": {"command": "pause", "reason": "a\x00"}}, 422),
]
IDS = [
    "after_seq-beyond-64-bits",
    "after_seq-400-digits",
    "after_seq-arabic-indic-digits",
    "limit-devanagari-digits",
    "dead-letter-after-beyond-64-bits",
    "dead-letter-after-int64-max-plus-one",
    "dead-letter-after-arabic-indic-digits",
    "device-cursor-with-newline",
    "device-cursor-402-characters",
    "limit-beyond-64-bits",
    "last_seen_after-year-1-plus-offset",
    "last_seen_after-year-9999-minus-offset",
    "last_seen_after-naive",
    "telemetry-since-year-1-plus-offset",
    "telemetry-until-year-9999-minus-offset",
    "telemetry-device-since-year-1",
    "rollout-start_at-year-9999-minus-offset",
    "device-id-newline-forging-a-log-line",
    "device-id-ansi-escape",
    "device-id-bidi-override",
    "group-id-carriage-return",
    "rollout-id-nul",
    "verdicts-rollout-id-newline",
    "release-id-newline",
    "token-id-newline",
    "telemetry-device-id-newline",
    "tag-filter-osc-escape",
    "rollout-group-filter-newline",
    "body-list-nested-1000-deep",
    "body-object-nested-1000-deep",
    "gate-nested-40-deep",
    "metadata-list-nested-1000-deep",
    "metadata-object-nested-1000-deep",
    "metadata-nested-40-deep",
    "selector-parentheses-400-deep",
    "selector-nested-or-expressions",
    "selector-5000-characters",
    "selector-with-newline",
    "metadata-nul-in-a-string",
    "gate-nul-in-a-key",
    "release-description-nul",
    "command-reason-nul",
]


@pytest.fixture(scope="module")
def pg_admin() -> Iterator[str | None]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiWorld, Api]]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            admin = request.getfixturevalue("pg_admin")
            if admin is None:
                pytest.skip("no PostgreSQL server and no initdb to start one")
            url = stack.enter_context(scratch_database(admin))
        world, api = stack.enter_context(full_api(tmp, url=url))
        world.seed_devices(2)
        with world.storage.begin() as uow:
            uow.releases.create(Release("rel-0", 1, ("mt3620",), {}, world.clock(), "alice"))
        signer = world.tokens[Role.RELEASE_SIGNER]
        body = {"id": "rel-1", "hardware_ids": ["mt3620"], "counter": 2}
        assert api.post("/releases", json=body, token=signer).status_code == 201
        yield world, api


def assert_clean_problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["code"] and body["detail"]
    for word in INTERNALS:
        assert word not in answer.text, f"{word!r} leaked: {answer.text[:300]}"
    return body


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), ROWS, ids=IDS)
def test_hostile_input_is_a_clean_problem(
    api: tuple[ApiWorld, Api],
    caplog: pytest.LogCaptureFixture,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    _world, client = api
    caplog.set_level(logging.DEBUG)
    answer = client.request(method, url, **kwargs)
    body = assert_clean_problem(answer, status)
    if status == 422:
        assert body.get("errors"), body
    for record in caplog.records:
        if record.name.startswith(("service", "uvicorn", "starlette", "fastapi")):
            assert "\n" not in record.getMessage(), record.getMessage()
            assert "\x1b" not in record.getMessage(), record.getMessage()
    # Nothing was stored and the service still answers.
    assert client.get("/health").status_code == 200


def test_storage_failure_answers_without_its_internals(tmp_path: Path) -> None:
    with full_api(tmp_path) as (world, client):
        admin = world.admin
        world.storage.close()
        (tmp_path / "api.db").unlink()  # every query now fails inside SQLAlchemy: no tables
        assert_clean_problem(client.get("/devices", token=admin), 503)
