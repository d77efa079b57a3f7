"""One operator must not get a release onto production devices alone. "Production" is decided
from the devices a rollout reaches (a member of any production group), at creation, at Start
and at every offer; only an admin may change a production group. Every row goes through the
real API, engine and dispatcher; the director's assignments are what the devices would get."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from service.storage import Device, Role
from tests.integration.api._api import T0, Session
from tests.security._api_session import session_fixture  # noqa: F401 (the `session` fixture)

PRODUCTION = ["dev-p1", "dev-p2"]
OTHERS = ["dev-n1", "dev-n2"]
PROD_GROUP = {"name": "prod", "kind": "tag", "selector": "ring=prod", "production": True}


def _fleet(session: Session) -> dict[str, str]:
    """Four devices in `fleet=demo`, two of them also `ring=prod`; the admin's production
    group `prod`; tokens for two operators, alice and bob."""
    world = session.world
    with world.storage.begin() as uow:
        uow.devices.upsert(
            Device(
                d,
                "mt3620",
                T0,
                tags={"fleet": "demo", **({"ring": "prod"} if d in PRODUCTION else {})},
            )
            for d in PRODUCTION + OTHERS
        )
    for device in PRODUCTION + OTHERS:
        world.hub.register_device(device)
    world.seed_release("rel-1", 1)
    assert session.api.put("/groups/prod", json=PROD_GROUP).status_code == 200  # the admin
    return {name: world.issue(name, Role.OPERATOR) for name in ("alice", "bob")}


def _rollout(group_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "ro-1",
        "release_id": "rel-1",
        "group_id": group_id,
        "stages": [{"name": "all", "percent": 100, "soak_seconds": 0}],
        "rate": {"base_per_minute": 1000, "max_per_minute": 1000},
    }
    return {**body, **changes}


def _command(session: Session, command: str, token: str) -> Any:
    return session.api.post("/rollouts/ro-1/commands", json={"command": command}, token=token)


def _offered(session: Session) -> set[str]:
    return set(session.world.director.assigned)


def _run(session: Session, minutes: int = 1) -> dict[str, Any]:
    for _ in range(minutes):
        session.world.clock.advance(minutes=1)
        session.world.tick()
    rollout: dict[str, Any] = session.api.get("/rollouts/ro-1").json()
    return rollout


# -- only an admin changes a production group -------------------------------------------------

GROUP_WRITES: list[tuple[str, Callable[[Session, str], Any]]] = [
    (
        "operator-turns-the-flag-off",
        lambda s, t: s.api.put("/groups/prod", json={**PROD_GROUP, "production": False}, token=t),
    ),
    (
        "operator-narrows-the-selector",
        lambda s, t: s.api.put("/groups/prod", json={**PROD_GROUP, "selector": "ring=x"}, token=t),
    ),
    ("operator-deletes-the-group", lambda s, t: s.api.delete("/groups/prod", token=t)),
    (
        "operator-makes-another-group-production",
        lambda s, t: s.api.put("/groups/new", json={**PROD_GROUP, "name": "new"}, token=t),
    ),
]


@pytest.mark.parametrize("write", [w[1] for w in GROUP_WRITES], ids=[w[0] for w in GROUP_WRITES])
def test_an_operator_cannot_change_a_production_group(
    session: Session, write: Callable[[Session, str], Any]
) -> None:
    tokens = _fleet(session)
    answer = write(session, tokens["alice"])
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "forbidden" and "production" in answer.json()["detail"]
    assert session.api.get("/groups/prod").json() == {
        **PROD_GROUP,
        "id": "prod",
        "members": 2,
        "time_zone": "UTC",
    }
    assert session.api.get("/groups/new").status_code == 404
    assert write(session, session.world.admin).status_code in (200, 204)  # an admin may


def test_an_operator_still_manages_non_production_groups(session: Session) -> None:
    tokens = _fleet(session)
    body = {"name": "lab", "kind": "tag", "selector": "fleet=demo"}
    assert session.api.put("/groups/lab", json=body, token=tokens["alice"]).status_code == 200
    assert session.api.delete("/groups/lab", token=tokens["alice"]).status_code == 204


# -- the routes around the rule -----------------------------------------------------------------


def test_overlapping_non_production_group_needs_a_second_operator(session: Session) -> None:
    tokens = _fleet(session)
    alice, bob = tokens["alice"], tokens["bob"]
    sneaky = {"name": "everyone", "kind": "tag", "selector": "fleet=demo"}  # not production
    assert session.api.put("/groups/everyone", json=sneaky, token=alice).status_code == 200
    created = session.api.post("/rollouts", json=_rollout("everyone"), token=alice)
    assert created.status_code == 201 and created.json()["spec"]["production"] is True
    refused = _command(session, "start", alice)
    assert refused.status_code == 409 and refused.json()["code"] == "precondition"
    assert "2 distinct operators" in refused.json()["detail"]
    _run(session)
    assert _offered(session) == set()
    assert _command(session, "approve", bob).status_code == 200
    assert _command(session, "start", alice).status_code == 200
    assert _run(session)["state"] != "paused"
    assert _offered(session) == set(PRODUCTION + OTHERS)


def test_flag_toggled_off_create_start_then_on_is_held_at_the_offer(session: Session) -> None:
    # The old route: flag off, create, start alone, flag back on. Only an admin can toggle it
    # now, but the offer is checked all the same: a device in a production group gets nothing
    # from a rollout one operator started, and the rollout pauses asking for approval.
    tokens = _fleet(session)
    alice, bob, admin = tokens["alice"], tokens["bob"], session.world.admin
    off = {**PROD_GROUP, "production": False}
    assert session.api.put("/groups/prod", json=off, token=admin).status_code == 200
    later = (session.world.clock() + timedelta(minutes=30)).isoformat()
    created = session.api.post("/rollouts", json=_rollout("prod", start_at=later), token=alice)
    assert created.status_code == 201
    started = _command(session, "start", alice)
    assert started.status_code == 200 and started.json()["state"] == "scheduled"
    assert session.api.put("/groups/prod", json=PROD_GROUP, token=admin).status_code == 200
    rollout = _run(session, 31)
    assert rollout["state"] == "paused"
    assert "production devices" in rollout["reason"] and "dev-p1" in rollout["reason"]
    assert _offered(session) == set()
    jobs = session.api.get("/rollouts/ro-1/jobs").json()["items"]
    assert {j["state"] for j in jobs} == {"pending"}
    notices = [n for n in session.world.notifier.notices.values() if n.kind == "approval"]
    assert notices and "production devices" in notices[-1].message
    # the same operator resuming does not clear it
    assert _command(session, "resume", alice).status_code == 200
    assert _run(session)["state"] == "paused" and _offered(session) == set()
    # a second operator's approval does
    assert _command(session, "approve", bob).status_code == 200
    assert _command(session, "resume", alice).status_code == 200
    _run(session)
    assert _offered(session) == set(PRODUCTION)


def test_flag_turned_on_between_create_and_start_needs_a_second_operator(
    session: Session,
) -> None:
    tokens = _fleet(session)
    alice, admin = tokens["alice"], session.world.admin
    off = {**PROD_GROUP, "production": False}
    assert session.api.put("/groups/prod", json=off, token=admin).status_code == 200
    assert session.api.post("/rollouts", json=_rollout("prod"), token=alice).status_code == 201
    assert session.api.put("/groups/prod", json=PROD_GROUP, token=admin).status_code == 200
    refused = _command(session, "start", alice)
    assert refused.status_code == 409 and refused.json()["code"] == "precondition"
    assert _offered(session) == set()


def test_a_production_group_made_over_a_running_rollout_holds_its_devices(
    session: Session,
) -> None:
    tokens = _fleet(session)
    alice, admin = tokens["alice"], session.world.admin
    assert session.api.delete("/groups/prod", token=admin).status_code == 204
    later = (session.world.clock() + timedelta(minutes=5)).isoformat()
    body = _rollout("everyone", start_at=later)
    group = {"name": "everyone", "kind": "tag", "selector": "fleet=demo"}
    assert session.api.put("/groups/everyone", json=group, token=alice).status_code == 200
    assert session.api.post("/rollouts", json=body, token=alice).status_code == 201
    assert _command(session, "start", alice).json()["state"] == "scheduled"
    assert session.api.put("/groups/prod", json=PROD_GROUP, token=admin).status_code == 200
    assert _run(session, 6)["state"] == "paused"
    assert _offered(session) == set()
