"""The outbox over HTTP: failing and parked messages with their reason, and the admin's retry
and drop, each audited; bad ids are 4xx problems."""

from __future__ import annotations

import pytest

from service.storage import Role
from tests.integration.api._api import PROBLEM, Session


def _park_an_offer(session: Session, device_id: str = "ghost") -> int:
    """An offer to a device the hub does not know, failed until the dispatcher parks it."""
    world = session.world
    with world.storage.begin() as uow:
        message_id = uow.outbox.append(
            "OfferRelease",
            {"device_id": device_id, "release_id": "r1", "workflow_id": "ro-1.r1.1"},
            world.clock(),
        )
    for _ in range(world.dispatcher._config.dispatch_max_attempts):
        world.dispatcher.run_once(world.clock())
        world.clock.advance(minutes=11)
    return message_id


def test_a_parked_message_is_listed_retried_and_audited(session: Session) -> None:
    world, api = session.world, session.api
    message_id = _park_an_offer(session)
    listed = api.get("/outbox", params={"state": "parked"}, token=world.tokens[Role.VIEWER])
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert (item["id"], item["state"], item["kind"]) == (message_id, "parked", "OfferRelease")
    assert item["attempts"] == 8 and "ghost" in item["last_error"]
    assert item["payload"]["device_id"] == "ghost"
    assert api.get("/outbox", params={"state": "retrying"}).json()["items"] == []
    assert api.get(f"/outbox/{message_id}").json()["state"] == "parked"

    world.hub.register_device("ghost")
    retried = api.post(f"/outbox/{message_id}/retry")
    assert retried.status_code == 200
    assert (retried.json()["state"], retried.json()["attempts"]) == ("queued", 0)
    assert world.dispatcher.run_once(world.clock()) == 1
    assert api.get(f"/outbox/{message_id}").json()["state"] == "dispatched"
    assert api.get("/outbox").json()["items"] == []
    audit = {e["action"]: e for e in api.get("/audit").json()["items"]}
    assert audit["outbox.park"]["actor"] == "engine"
    assert audit["outbox.retry"]["actor"] == "admin"
    assert audit["outbox.retry"]["details"]["device_id"] == "ghost"


def test_a_dropped_message_is_never_delivered(session: Session) -> None:
    world, api = session.world, session.api
    message_id = _park_an_offer(session)
    dropped = api.post(f"/outbox/{message_id}/drop")
    assert dropped.status_code == 200 and dropped.json()["state"] == "dropped"
    world.hub.register_device("ghost")
    world.clock.advance(hours=1)
    assert world.dispatcher.run_once(world.clock()) == 0
    assert world.hub.desired("ghost").get("tinyfleet") is None
    assert api.post(f"/outbox/{message_id}/retry").status_code == 404
    assert [e["action"] for e in api.get("/audit").json()["items"]][-1] == "outbox.drop"


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.VIEWER, 403), (Role.OPERATOR, 403), (Role.RELEASE_SIGNER, 403), (None, 401)],
    ids=["viewer", "operator", "release-signer", "no-token"],
)
@pytest.mark.parametrize("action", ["retry", "drop"], ids=["retry", "drop"])
def test_only_an_admin_retries_or_drops(
    session: Session, role: Role | None, status: int, action: str
) -> None:
    message_id = _park_an_offer(session)
    token = session.world.tokens[role] if role is not None else None
    answer = session.api.post(f"/outbox/{message_id}/{action}", token=token)
    assert answer.status_code == status
    assert session.api.get(f"/outbox/{message_id}").json()["state"] == "parked"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/outbox/0/retry", 422),
        ("/outbox/99999999999999999999999/drop", 422),
        ("/outbox/%E0%A5%A7/retry", 422),
        ("/outbox/12345/retry", 404),
        ("/outbox?after_id=99999999999999999999999", 422),
        ("/outbox?state=dispatched", 422),
    ],
    ids=["zero", "beyond-64-bits", "devanagari-digit", "unknown", "after-beyond-64-bits", "state"],
)
def test_bad_outbox_requests_are_problems(session: Session, path: str, status: int) -> None:
    method = session.api.post if path.endswith(("retry", "drop")) else session.api.get
    answer = method(path)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith(PROBLEM)


def test_a_message_that_never_failed_cannot_be_retried(session: Session) -> None:
    world = session.world
    with world.storage.begin() as uow:
        message_id = uow.outbox.append("Notify", {"rollout_id": "ro-1"}, world.clock())
    answer = session.api.post(f"/outbox/{message_id}/drop")
    assert answer.status_code == 409 and answer.json()["code"] == "conflict"
