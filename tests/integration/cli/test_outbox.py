"""`tinyfleet outbox list|retry|drop` against a running service."""

from __future__ import annotations

import json
from datetime import timedelta

from service.storage import Role
from tests.integration.cli.conftest import Stack


def _park(stack: Stack, device_id: str) -> int:
    with stack.storage.begin() as uow:
        message_id = uow.outbox.append(
            "OfferRelease",
            {"device_id": device_id, "release_id": "r1", "workflow_id": "ro-1.r1.1"},
            stack.now,
        )
    for _ in range(8):
        stack.dispatcher.run_once(stack.now)
        stack.clock.now += timedelta(minutes=11)
    return message_id


def test_list_retry_and_drop_parked_messages(stack: Stack) -> None:
    first, second = _park(stack, "ghost-1"), _park(stack, "ghost-2")
    listed = stack.run("outbox", "list", "--state", "parked", "--json")
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.stdout)
    assert [(m["id"], m["state"]) for m in items] == [(first, "parked"), (second, "parked")]
    table = stack.run("outbox", "list")
    assert table.exit_code == 0 and "ghost-1" in table.stdout and "parked" in table.stdout

    viewer = stack.token("watcher", Role.VIEWER)
    refused = stack.run("outbox", "drop", str(first), token=viewer)
    assert refused.exit_code == 4 and "403" in refused.stderr

    stack.hub.register_device("ghost-1")
    retried = stack.run("outbox", "retry", str(first), "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["state"] == "queued"
    dropped = stack.run("outbox", "drop", str(second))
    assert dropped.exit_code == 0 and "dropped" in dropped.stdout
    assert stack.dispatcher.run_once(stack.now) == 1
    assert json.loads(stack.run("outbox", "list", "--json").stdout) == []

    missing = stack.run("outbox", "retry", "999999")
    assert missing.exit_code != 0 and "404" in missing.stderr
    actions = [e["action"] for e in json.loads(stack.run("audit", "list", "--json").stdout)]
    assert actions[-2:] == ["outbox.retry", "outbox.drop"]
