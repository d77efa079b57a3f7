"""Rollouts through the API: creation (spec errors named), commands, progress, a full lifecycle
driven by the in-memory hub and simulated twin reports."""

from __future__ import annotations

from typing import Any

import pytest

from service.storage import Role
from tests.integration.api._api import PROBLEM, Session
from tests.integration.engine._world import Fleet


def _setup(session: Session, devices: int = 10, *, production: bool = False) -> list[str]:
    world, api = session.world, session.api
    ids = world.seed_devices(devices)
    for device in ids:
        world.hub.register_device(device)
    world.seed_release("rel-0", 0)
    world.seed_release("rel-1", 1)
    group = {"name": "demo", "kind": "tag", "selector": "fleet=demo", "production": production}
    assert api.put("/groups/grp-1", json=group).status_code == 200
    return ids


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "ro-1",
        "release_id": "rel-1",
        "group_id": "grp-1",
        "previous_release_id": "rel-0",
        "stages": [
            {"name": "canary", "count": 2, "soak_seconds": 120},
            {"name": "rest", "percent": 100, "soak_seconds": 120},
        ],
        "success": {"threshold_percent": 80, "advance": "auto"},
        "failure": {"threshold_percent": 50, "min_devices": 5, "action": "pause"},
        "rate": {"base_per_minute": 1000, "max_per_minute": 1000},
    }
    body.update(changes)
    return body


def test_create_and_read(every_session: Session) -> None:
    session = every_session
    _setup(session)
    api, operator = session.api, session.world.tokens[Role.OPERATOR]
    created = api.post("/rollouts", json=_body(), token=operator)
    assert created.status_code == 201, created.text
    rollout = created.json()
    assert rollout["id"] == "ro-1" and rollout["state"] == "draft"
    assert rollout["group_id"] == "grp-1" and rollout["previous_release_id"] == "rel-0"
    assert [s["name"] for s in rollout["stages"]] == ["canary", "rest"]
    assert [s["planned"] for s in rollout["stages"]] == [2, 8]
    assert rollout["totals"] == {"pending": 10}
    assert rollout["gate"] is None  # no verdict yet
    # gates are on by default: a rollout with a previous release gets the default gate
    assert rollout["spec"]["gate"]["stage"] == "all" and rollout["spec"]["success"]["require_gate"]
    assert api.get("/rollouts/ro-1").json() == rollout
    assert [r["id"] for r in api.get("/rollouts").json()["items"]] == ["ro-1"]
    assert api.get("/rollouts", params={"state": "running"}).json()["items"] == []
    assert api.get("/rollouts", params={"group_id": "other"}).json()["items"] == []
    jobs = api.get("/rollouts/ro-1/jobs", params={"limit": 4}).json()
    assert len(jobs["items"]) == 4 and jobs["next_after"] is not None
    assert {j["release_id"] for j in jobs["items"]} == {"rel-1"}
    assert api.get("/devices/dev-000/jobs").json()["items"][0]["rollout_id"] == "ro-1"
    again = api.post("/rollouts", json=_body(), token=operator)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    audit = api.get("/audit").json()["items"][-1]
    assert (audit["action"], audit["subject"], audit["actor"]) == (
        "rollout.create",
        "ro-1",
        "operator",
    )


SPEC_ERRORS = [
    ("no-stages", {"stages": []}, "stages"),
    ("bad-percent", {"stages": [{"name": "a", "percent": 150}]}, "percent"),
    ("both-sizes", {"stages": [{"name": "a", "percent": 10, "count": 3}]}, "stage"),
    ("bad-id", {"id": "has space"}, "id"),
    ("bad-retries", {"retry": {"max_retries": 99}}, "max_retries"),
    ("bad-silence", {"retry": {"core_silence_seconds": 0.5}}, "core_silence"),
    ("bad-cron", {"windows": [{"cron": "99 * * * *", "duration_minutes": 60}]}, "windows"),
    ("unknown-field", {"colour": "red"}, "colour"),
    ("bad-advance", {"success": {"advance": "sometimes"}}, "advance"),
]


@pytest.mark.parametrize(
    ("changes", "field"), [r[1:] for r in SPEC_ERRORS], ids=[r[0] for r in SPEC_ERRORS]
)
def test_spec_errors_name_the_field(session: Session, changes: dict[str, Any], field: str) -> None:
    _setup(session, 3)
    answer = session.api.post("/rollouts", json=_body(**changes))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["code"] == "invalid"
    locations = [".".join(str(p) for p in e["loc"]) for e in problem["errors"]]
    assert any(field in loc for loc in locations), locations
    assert session.api.get("/rollouts").json()["items"] == []


def test_the_retry_timings_given_are_the_rollouts(session: Session) -> None:
    _setup(session, 3)
    retry = {"core_silence_seconds": 120, "offer_timeout_seconds": 600}
    created = session.api.post("/rollouts", json=_body(retry=retry))
    assert created.status_code == 201, created.text
    spec = session.api.get("/rollouts/ro-1").json()["spec"]["retry"]
    assert (spec["core_silence_seconds"], spec["offer_timeout_seconds"]) == (120, 600)


def test_missing_group_or_release_is_not_found(session: Session) -> None:
    _setup(session, 3)
    assert session.api.post("/rollouts", json=_body(group_id="nope")).status_code == 404
    assert session.api.post("/rollouts", json=_body(release_id="nope")).status_code == 404
    assert session.api.get("/rollouts/nope").status_code == 404
    assert session.api.get("/rollouts/nope/jobs").status_code == 404
    missing = session.api.post("/rollouts/nope/commands", json={"command": "start"})
    assert missing.status_code == 404


def test_illegal_command_is_a_conflict_naming_state_and_command(session: Session) -> None:
    _setup(session, 3)
    api = session.api
    api.post("/rollouts", json=_body())
    answer = api.post("/rollouts/ro-1/commands", json={"command": "resume"})
    assert answer.status_code == 409
    problem = answer.json()
    assert problem["code"] == "conflict"
    assert "draft" in problem["detail"] and "Resume" in problem["detail"]
    bad = api.post("/rollouts/ro-1/commands", json={"command": "explode"})
    assert bad.status_code == 422


def test_production_needs_a_second_approver(session: Session) -> None:
    _setup(session, 3, production=True)
    world, api = session.world, session.api
    alice = world.issue("alice", Role.OPERATOR)
    bob = world.issue("bob", Role.OPERATOR)
    assert api.post("/rollouts", json=_body(), token=alice).status_code == 201
    refused = api.post("/rollouts/ro-1/commands", json={"command": "start"}, token=alice)
    assert refused.status_code == 409
    assert refused.json()["code"] == "precondition"
    approve = api.post("/rollouts/ro-1/commands", json={"command": "approve"}, token=alice)
    assert approve.status_code == 200, approve.text
    assert approve.json()["approvals"] == ["alice"]
    api.post("/rollouts/ro-1/commands", json={"command": "approve"}, token=bob)
    started = api.post("/rollouts/ro-1/commands", json={"command": "start"}, token=alice)
    assert started.status_code == 200, started.text
    assert started.json()["state"] != "draft"


def test_full_lifecycle_with_pause_and_resume(every_session: Session) -> None:
    session = every_session
    ids = _setup(session, 10)
    world, api = session.world, session.api
    operator = world.tokens[Role.OPERATOR]
    # No telemetry flows in this world: opt out of the default gate, which would wait for it.
    assert api.post("/rollouts", json=_body(gate="none"), token=operator).status_code == 201
    started = api.post("/rollouts/ro-1/commands", json={"command": "start"}, token=operator)
    assert started.status_code == 200 and started.json()["state"] == "running"
    fleet = Fleet(world.hub, ids, bad=set(), clock=world.clock)
    states = []
    paused = False
    for _minute in range(60):
        world.clock.advance(minutes=1)
        fleet.step()
        world.tick()
        rollout = api.get("/rollouts/ro-1").json()
        states.append(rollout["state"])
        if rollout["stage"] == 1 and not paused:
            reply = api.post(
                "/rollouts/ro-1/commands",
                json={"command": "pause", "reason": "lunch"},
                token=operator,
            )
            assert reply.json()["state"] == "paused" and "lunch" in reply.json()["reason"]
            paused = True
            world.clock.advance(minutes=5)
            world.tick()
            assert api.get("/rollouts/ro-1").json()["state"] == "paused"
            resumed = api.post("/rollouts/ro-1/commands", json={"command": "resume"})
            assert resumed.json()["state"] == "running"
        if rollout["state"] == "completed":
            break
    assert states[-1] == "completed", states
    assert paused
    done = api.get("/rollouts/ro-1").json()
    assert done["totals"] == {"confirmed": 10}
    assert [s["counts"] for s in done["stages"]] == [{"confirmed": 2}, {"confirmed": 8}]
    assert all(s["state"] == "done" or s["ended_at"] for s in done["stages"])
    confirmed = api.get("/rollouts/ro-1/jobs", params={"state": "confirmed", "limit": 1000})
    assert len(confirmed.json()["items"]) == 10
    actions = [e["action"] for e in api.get("/audit", params={"limit": 1000}).json()["items"]]
    assert actions[-4:] == ["rollout.create", "rollout.start", "rollout.pause", "rollout.resume"]
    assert api.get("/audit/verify").json()["ok"] is True


def test_abort_through_the_api(session: Session) -> None:
    _setup(session, 4)
    api = session.api
    api.post("/rollouts", json=_body())
    api.post("/rollouts/ro-1/commands", json={"command": "start"})
    aborted = api.post("/rollouts/ro-1/commands", json={"command": "abort", "reason": "bad day"})
    assert aborted.status_code == 200
    assert aborted.json()["state"] in ("aborting", "aborted")
    again = api.post("/rollouts/ro-1/commands", json={"command": "start"})
    assert again.status_code == 409


def test_operator_rollback_returns_devices_to_the_previous_release(session: Session) -> None:
    ids = _setup(session, 4)
    world, api = session.world, session.api
    body = _body(stages=[{"name": "all", "percent": 100, "soak_seconds": 60}])
    api.post("/rollouts", json=body)
    api.post("/rollouts/ro-1/commands", json={"command": "start"})
    fleet = Fleet(world.hub, ids, bad=set(), clock=world.clock)
    for _minute in range(8):
        world.clock.advance(minutes=1)
        fleet.step()
        world.tick()
    assert api.get("/rollouts/ro-1").json()["totals"].get("confirmed", 0) > 0
    reply = api.post("/rollouts/ro-1/commands", json={"command": "rollback", "reason": "regress"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] in ("rolling_back", "rolled_back")
    for _minute in range(30):
        world.clock.advance(minutes=1)
        fleet.step()
        world.tick()
        if api.get("/rollouts/ro-1").json()["state"] == "rolled_back":
            break
    assert api.get("/rollouts/ro-1").json()["state"] == "rolled_back"
    jobs = api.get("/rollouts/ro-1/jobs", params={"limit": 1000}).json()["items"]
    assert {j["release_id"] for j in jobs} == {"rel-1", "rel-0"}
    rolled = api.get("/rollouts/ro-1").json()
    forward = sum(sum(s["counts"].values()) for s in rolled["stages"])
    assert forward == len(ids)  # each device counted once in the stages
    assert sum(rolled["rollback"].values()) == len([j for j in jobs if j["release_id"] == "rel-0"])
    assert rolled["rollback"].get("confirmed", 0) > 0
