"""Tokens (issued once, hashed at rest, revocable) and the hash-chained audit log."""

from __future__ import annotations

from service.storage import MemoryStorage, Role
from tests.integration.api._api import Session


def test_token_lifecycle(session: Session) -> None:
    api = session.api
    issued = api.post("/tokens", json={"name": "ci", "role": "operator"})
    assert issued.status_code == 201
    token = issued.json()
    assert set(token) == {"id", "name", "role", "secret"}
    assert token["role"] == "operator" and token["secret"]
    assert api.get("/groups", token=token["secret"]).status_code == 200
    listed = {t["name"]: t for t in api.get("/tokens").json()["items"]}
    assert "secret" not in listed["ci"] and listed["ci"]["revoked_at"] is None
    assert api.delete(f"/tokens/{token['id']}").status_code == 204
    assert api.get("/groups", token=token["secret"]).status_code == 401
    listed = {t["name"]: t for t in api.get("/tokens").json()["items"]}
    assert listed["ci"]["revoked_at"] is not None
    assert api.delete("/tokens/nope").status_code == 404
    bad = api.post("/tokens", json={"name": "x", "role": "emperor"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid"
    actions = [(e["action"], e["actor"]) for e in api.get("/audit").json()["items"]]
    assert actions == [("token.create", "admin"), ("token.revoke", "admin")]


def test_secrets_are_not_stored(session: Session) -> None:
    secret = session.api.post("/tokens", json={"name": "ci", "role": "viewer"}).json()["secret"]
    storage = session.world.storage
    if isinstance(storage, MemoryStorage):
        assert secret not in repr(storage._tables.tokens)
    else:
        with storage.engine.connect() as conn:  # type: ignore[attr-defined]
            rows = conn.exec_driver_sql("SELECT * FROM api_tokens").fetchall()
        assert rows and all(secret not in str(row) for row in rows)


def test_audit_chain_after_many_changes(sql_session: Session) -> None:
    world, api = sql_session.world, sql_session.api
    world.seed_devices(5)
    operator = world.tokens[Role.OPERATOR]
    for n in range(40):
        group = {"name": f"g{n}", "kind": "tag", "selector": f"site=s{n % 3}"}
        assert api.put(f"/groups/g{n}", json=group, token=operator).status_code == 200
    for n in range(0, 40, 2):
        assert api.delete(f"/groups/g{n}", token=operator).status_code == 204
    for n in range(10):
        api.post("/tokens", json={"name": f"t{n}", "role": "viewer"})
    entries = []
    after = 0
    while True:
        page = api.get("/audit", params={"after_seq": after, "limit": 25}).json()["items"]
        if not page:
            break
        entries += page
        after = page[-1]["seq"]
    assert len(entries) == 70
    assert [e["seq"] for e in entries] == list(range(entries[0]["seq"], entries[0]["seq"] + 70))
    assert len({e["hash"] for e in entries}) == 70
    assert {e["actor"] for e in entries} == {"operator", "admin"}
    assert entries[0]["details"] == {
        "name": "g0",
        "kind": "tag",
        "selector": "site=s0",
        "time_zone": "UTC",
        "production": False,
    }
    report = api.get("/audit/verify").json()
    assert report == {"ok": True, "checked": 70, "first_broken_seq": None, "reason": None}


def test_verify_reports_a_tampered_entry() -> None:
    from contextlib import ExitStack
    from dataclasses import replace

    from tests.integration.api._api import open_session

    storage = MemoryStorage()
    with ExitStack() as stack:
        for s in open_session(storage, stack):
            for n in range(5):
                s.api.put(f"/groups/g{n}", json={"name": f"g{n}", "kind": "tag", "selector": "a=b"})
            entries = storage._tables.audit
            entries[2] = replace(entries[2], actor="mallory")
            report = s.api.get("/audit/verify").json()
            assert report["ok"] is False
            assert report["first_broken_seq"] == 3
