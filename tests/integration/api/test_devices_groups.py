"""Devices (filters, pagination, jobs, registry sync from the hub) and groups."""

from __future__ import annotations

from datetime import timedelta

from device_agent.protocol import COMPONENT
from service.storage import Role
from tests.integration.api._api import PROBLEM, T0, Session


def test_devices_page_through_every_device_once(session: Session) -> None:
    ids = session.world.seed_devices(25)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 10, **({"after": after} if after else {})}
        body = session.api.get("/devices", params=params).json()
        seen += [d["id"] for d in body["items"]]
        pages += 1
        after = body["next_after"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3


def test_device_filters(session: Session) -> None:
    session.world.seed_devices(10)
    api = session.api
    berlin = api.get("/devices", params={"tag": "site=berlin"}).json()["items"]
    assert [d["id"] for d in berlin] == [f"dev-{i:03d}" for i in range(1, 10, 2)]
    both = api.get("/devices", params=[("tag", "site=berlin"), ("tag", "fleet=demo")]).json()
    assert len(both["items"]) == 5
    assert api.get("/devices", params={"hardware_id": "other"}).json()["items"] == []
    assert len(api.get("/devices", params={"profile": "kws"}).json()["items"]) == 10
    recent = api.get("/devices", params={"last_seen_after": "2026-11-25T12:07:00+00:00"}).json()
    assert [d["id"] for d in recent["items"]] == ["dev-007", "dev-008", "dev-009"]


def test_online_is_judged_on_the_services_clock(session: Session) -> None:
    # devices were last seen at T0 + i minutes; the service's clock decides, not the caller's
    world, api = session.world, session.api
    world.seed_devices(10)
    world.clock.now = T0 + timedelta(minutes=9)

    def online() -> list[str]:
        return [d["id"] for d in api.get("/devices").json()["items"] if d["online"]]

    assert online() == [f"dev-{i:03d}" for i in range(4, 10)]
    world.clock.advance(hours=1)
    assert online() == []
    assert api.get("/devices/dev-009").json()["online"] is False


def test_bad_queries_are_invalid_problems(session: Session) -> None:
    api = session.api
    for params in ({"limit": 0}, {"limit": 1001}, {"tag": "no-equals"}, {"last_seen_after": "x"}):
        answer = api.get("/devices", params=params)
        assert answer.status_code == 422, params
        assert answer.headers["content-type"] == PROBLEM
        body = answer.json()
        assert body["code"] == "invalid"
        assert body["errors"] and all({"loc", "msg"} <= set(e) for e in body["errors"])


def test_one_device_and_its_jobs(session: Session) -> None:
    session.world.seed_devices(2)
    device = session.api.get("/devices/dev-001").json()
    assert device["hardware_id"] == "mt3620"
    assert device["created_at"].startswith("2026-11-25T12:00:00")
    assert session.api.get("/devices/dev-001/jobs").json() == {"items": []}
    missing = session.api.get("/devices/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not-found"
    assert session.api.get("/devices/nope/jobs").status_code == 404


def test_sync_pulls_twins_from_the_hub(session: Session) -> None:
    world, api = session.world, session.api
    for n in range(3):
        device = f"hub-{n}"
        world.hub.register_device(device)
        world.hub.set_tags(device, {"site": "berlin", "hardwareId": "mt3620"})
    agent = {
        "agentVersion": "1.2.0",
        "profile": "kws",
        "hardwareId": "mt3620",
        "state": "idle",
        "installedReleaseId": "rel-7",
        "cores": {
            "m4-0": {
                "state": "running",
                "slot": "a",
                "activeModel": {"modelId": "kws", "version": "2", "sha256": "ab"},
            }
        },
    }
    world.hub.report("hub-1", {COMPONENT: {"__t": "c", "agent": agent}})
    answer = api.post("/devices/sync", token=world.tokens[Role.OPERATOR])
    assert answer.status_code == 200
    assert answer.json() == {"synced": 3}
    device = api.get("/devices/hub-1").json()
    assert device["agent_version"] == "1.2.0"
    assert device["release"] == "rel-7"
    assert device["tags"] == {"site": "berlin", "hardwareId": "mt3620"}
    assert device["cores"] == [
        {"core": "m4-0", "slot": "a", "model_id": "kws", "model_version": "2", "state": "running"}
    ]
    assert device["last_seen"] is not None
    other = api.get("/devices/hub-0").json()
    assert other["hardware_id"] == "mt3620"
    assert other["cores"] == [] and other["release"] is None
    audit = api.get("/audit").json()["items"]
    assert audit[-1]["action"] == "devices.sync" and audit[-1]["actor"] == "operator"


def test_group_lifecycle(session: Session) -> None:
    world, api = session.world, session.api
    world.seed_devices(6)
    operator = world.tokens[Role.OPERATOR]
    body = {"name": "Berlin", "kind": "tag", "selector": "site=berlin"}
    body["time_zone"] = "Europe/Berlin"
    put = api.put("/groups/berlin", json=body, token=operator)
    assert put.status_code == 200
    assert put.json() == {
        "id": "berlin",
        "name": "Berlin",
        "kind": "tag",
        "selector": "site=berlin",
        "time_zone": "Europe/Berlin",
        "production": False,
        "members": 3,
    }
    query = {"name": "Q", "kind": "query", "selector": "hardware_id=mt3620 and tags.site=oslo"}
    assert api.put("/groups/oslo", json=query, token=operator).json()["members"] == 3
    assert [g["id"] for g in api.get("/groups").json()["items"]] == ["berlin", "oslo"]
    assert api.get("/groups/berlin").json()["members"] == 3
    page = api.get("/groups/berlin/members", params={"limit": 2}).json()
    assert [d["id"] for d in page["items"]] == ["dev-001", "dev-003"]
    rest = api.get("/groups/berlin/members", params={"after": page["next_after"]}).json()
    assert [d["id"] for d in rest["items"]] == ["dev-005"] and rest["next_after"] is None
    production = {**body, "production": True}
    assert api.put("/groups/berlin", json=production, token=operator).status_code == 403
    replaced = api.put("/groups/berlin", json=production)  # only an admin writes the flag
    assert replaced.json()["production"] is True
    assert api.delete("/groups/oslo", token=operator).status_code == 204
    assert api.get("/groups/oslo").status_code == 404
    assert api.delete("/groups/oslo", token=operator).status_code == 404
    actions = [(e["action"], e["subject"]) for e in api.get("/audit").json()["items"]]
    assert actions == [
        ("group.put", "berlin"),
        ("group.put", "oslo"),
        ("group.put", "berlin"),
        ("group.delete", "oslo"),
    ]


def test_group_input_errors(session: Session) -> None:
    api = session.api
    bad = [
        {"name": "x", "kind": "tag", "selector": "no-equals"},
        {"name": "x", "kind": "query", "selector": "colour=red"},
        {"name": "x", "kind": "tag", "selector": "a=b", "time_zone": "Mars/Olympus"},
        {"name": "x", "kind": "neither", "selector": "a=b"},
        {"name": "x", "kind": "tag", "selector": "a=b", "surprise": 1},
    ]
    for body in bad:
        answer = api.put("/groups/g", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["code"] == "invalid"
    assert api.get("/groups").json() == {"items": []}


def test_group_in_use_cannot_be_deleted(session: Session) -> None:
    world, api = session.world, session.api
    world.seed_devices(4)
    world.seed_release("rel-1")
    api.put("/groups/g", json={"name": "g", "kind": "tag", "selector": "fleet=demo"})
    body = {"id": "ro-1", "release_id": "rel-1", "group_id": "g", "stages": [{"name": "all"}]}
    body["stages"] = [{"name": "all", "percent": 100, "soak_seconds": 0}]
    assert api.post("/rollouts", json=body).status_code == 201
    answer = api.delete("/groups/g")
    assert answer.status_code == 409
    assert answer.json()["code"] == "conflict"
