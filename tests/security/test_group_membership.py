"""A device that holds only its own key writes its reported twin, nothing else: it must not
make itself a member of a (production) group, nor of a health gate's cohort, by reporting
values the group's query names. Membership comes from operator-set twin tags; reported facts
only narrow it. Every row goes through the hub, the registry sync and the API."""

from __future__ import annotations

from typing import Any

import pytest

from device_agent.protocol import COMPONENT
from service.storage import DeviceGroup, GroupKind, Role
from service.telemetry import StorageGroups
from tests.integration.api._api import Session
from tests.security._api_session import session_fixture  # noqa: F401 (the `session` fixture)

PROD_QUERY = "tags.ring=prod and hardware_id=mt3620 and profile=kws and agent_version=1.0.0"
HONEST = {"hardwareId": "mt3620", "profile": "kws", "agentVersion": "1.0.0", "state": "idle"}


def _device(session: Session, device: str, tags: dict[str, str], agent: dict[str, Any]) -> None:
    hub = session.world.hub
    hub.register_device(device)
    if tags:
        hub.set_tags(device, tags)
    if agent:
        hub.report(device, {COMPONENT: {"__t": "c", "agent": agent}})


def _scene(session: Session, evil_tags: dict[str, str], evil_agent: dict[str, Any]) -> None:
    """`prod-1` is the operator's production device; `evil` reports whatever the row says."""
    _device(session, "prod-1", {"ring": "prod", "hardwareId": "mt3620"}, HONEST)
    _device(session, "evil", evil_tags, evil_agent)
    api = session.api
    assert api.post("/devices/sync", token=session.world.tokens[Role.OPERATOR]).status_code == 200


def _members(session: Session, group_id: str) -> list[str]:
    page = session.api.get(f"/groups/{group_id}/members").json()
    return [d["id"] for d in page["items"]]


def _put(session: Session, group_id: str, selector: str, *, production: bool = True) -> None:
    body = {"name": group_id, "kind": "query", "selector": selector, "production": production}
    answer = session.api.put(f"/groups/{group_id}", json=body)  # the admin's token
    assert answer.status_code == 200, answer.text


ATTACKS = [
    (
        "reports-every-queried-value",
        {},
        HONEST,
        PROD_QUERY,
    ),
    (
        "reports-the-tag-inside-its-agent-document",
        {},
        {**HONEST, "ring": "prod", "tags": {"ring": "prod"}},
        PROD_QUERY,
    ),
    (
        "untagged-in-the-fleet-reports-production-values",
        {"fleet": "demo"},
        {**HONEST, "profile": "prod"},
        "tags.ring=prod and profile=prod",
    ),
    (
        "reported-hardware-overrides-the-operator-tag",
        {"ring": "lab", "hardwareId": "mt3620-b", "profile": "lab"},
        HONEST,
        "tags.ring=lab and hardware_id=mt3620",
    ),
    (
        "operator-tag-matches-but-report-disagrees",
        {"ring": "prod", "hardwareId": "mt3620"},
        {**HONEST, "hardwareId": "linux-a7-m4"},
        "tags.ring=prod and hardware_id=mt3620",
    ),
]


@pytest.mark.parametrize(
    ("evil_tags", "evil_agent", "selector"),
    [a[1:] for a in ATTACKS],
    ids=[a[0] for a in ATTACKS],
)
def test_reported_values_never_make_a_device_a_member(
    session: Session, evil_tags: dict[str, str], evil_agent: dict[str, Any], selector: str
) -> None:
    _scene(session, evil_tags, evil_agent)
    _put(session, "prod", selector)
    assert "evil" not in _members(session, "prod")
    assert session.api.get("/groups/prod").json()["members"] == len(_members(session, "prod"))
    # the health gate's cohorts come from the same membership
    assert "prod" not in StorageGroups(session.world.storage, clock=session.world.clock)("evil")


def test_operator_tags_are_not_overridden_by_reported_properties(session: Session) -> None:
    _scene(session, {"ring": "lab", "hardwareId": "mt3620-b", "profile": "lab"}, HONEST)
    evil = session.api.get("/devices/evil").json()
    assert (evil["hardware_id"], evil["profile"]) == ("mt3620-b", "lab")
    assert evil["agent_version"] == "1.0.0"  # only the device knows it: reported, narrows only
    # a report that disagrees with the operator's tag narrows even the tag's own value out
    _put(session, "lab-b", "tags.ring=lab and hardware_id=mt3620-b", production=False)
    assert _members(session, "lab-b") == []
    _put(session, "lab", "tags.ring=lab", production=False)
    assert _members(session, "lab") == ["evil"]


def test_the_production_device_itself_stays_a_member(session: Session) -> None:
    _scene(session, {}, HONEST)
    _put(session, "prod", PROD_QUERY)
    assert _members(session, "prod") == ["prod-1"]
    assert StorageGroups(session.world.storage, clock=session.world.clock)("prod-1") == ("prod",)


QUERIES_WITHOUT_TAGS = [
    ("hardware-only", "hardware_id=mt3620"),
    ("every-device-fact", "hardware_id=mt3620 and profile=kws and agent_version=1.0.0"),
]


@pytest.mark.parametrize(
    "selector", [q[1] for q in QUERIES_WITHOUT_TAGS], ids=[q[0] for q in QUERIES_WITHOUT_TAGS]
)
def test_a_query_on_device_facts_alone_is_refused(session: Session, selector: str) -> None:
    _scene(session, {}, HONEST)
    body = {"name": "q", "kind": "query", "selector": selector, "production": True}
    answer = session.api.put("/groups/q", json=body)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid"
    assert "tags." in answer.json()["detail"]


def test_a_stored_query_without_tags_has_no_members(session: Session) -> None:
    # A group stored before the rule (written straight to storage) selects nobody: fail closed.
    _scene(session, {}, HONEST)
    with session.world.storage.begin() as uow:
        uow.groups.put(DeviceGroup("old", "Old", GroupKind.QUERY, "hardware_id=mt3620"))
    assert _members(session, "old") == []
    assert session.api.get("/groups/old").json()["members"] == 0


def test_a_rollout_on_the_production_group_plans_no_job_for_the_reporter(
    session: Session,
) -> None:
    _scene(session, {}, HONEST)
    _put(session, "prod", PROD_QUERY)
    session.world.seed_release("rel-1", 1)
    body = {
        "id": "ro-1",
        "release_id": "rel-1",
        "group_id": "prod",
        "stages": [{"name": "all", "percent": 100, "soak_seconds": 0}],
    }
    created = session.api.post("/rollouts", json=body, token=session.world.tokens[Role.OPERATOR])
    assert created.status_code == 201, created.text
    jobs = session.api.get("/rollouts/ro-1/jobs").json()["items"]
    assert [j["device_id"] for j in jobs] == ["prod-1"]
