"""One message that keeps failing never blocks the outbox: it backs off, is parked with its
reason and an audit entry, and every other message is delivered; a restart keeps all of it.

The ports are real in-memory ones; the poison is what production meets: a device the hub does
not know, a director that refuses a device, a notifier that refuses a rollout, an unknown kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from device_agent.protocol import COMPONENT
from service.engine import Dispatcher, EngineConfig, MemoryDirector, MemoryNotifier, Notice
from service.hubgateway import MemoryHubGateway
from service.storage import Storage
from signing import PublishError
from tests.integration.engine._world import CONFIG, T0

POISON_DEVICE = "ghost"  # not registered on the hub
REFUSED_DEVICE = "refused"  # the director refuses it
POISON_ROLLOUT = "ro-poison"  # the notifier refuses it
GOOD = ["dev-a", "dev-b", REFUSED_DEVICE]
RETRIES = replace(
    CONFIG,
    dispatch_max_attempts=3,
    dispatch_backoff=timedelta(seconds=10),
    dispatch_backoff_max=timedelta(seconds=15),
)


@dataclass
class RefusingDirector(MemoryDirector):
    refused: set[str] = field(default_factory=lambda: {REFUSED_DEVICE})

    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        if device_id in self.refused:
            raise PublishError(f"device id {device_id!r} refused")
        super().assign(device_id, hardware_id, release_id, now)


@dataclass
class RefusingNotifier(MemoryNotifier):
    def notify(self, notice: Notice) -> None:
        if notice.rollout_id == POISON_ROLLOUT:
            raise ConnectionError("webhook answered 500")
        super().notify(notice)


@dataclass
class DroppingNotifier(MemoryNotifier):
    """Drops message `victim` (as an admin would) while delivering it, then fails."""

    storage: Storage | None = None
    victim: int = 0
    box: Any = None

    def notify(self, notice: Notice) -> None:
        assert self.storage is not None
        with self.storage.begin() as uow:
            uow.outbox.drop(self.victim, self.box.now)
        raise ConnectionError("webhook answered 500")


def _meta(rollout_id: str, position: int) -> dict[str, Any]:
    return {"epoch": 1, "version": 1, "position": position, "origin": rollout_id}


def _message(kind: str, device_id: str, rollout_id: str, n: int) -> tuple[str, dict[str, Any]]:
    meta = _meta(rollout_id, n)
    if kind == "WriteDirector":
        body = {"device_id": device_id, "release_id": "rel-1", "hardware_id": "mt3620"}
    elif kind in ("OfferRelease", "RevokeOffer"):
        body = {"device_id": device_id, "release_id": "rel-1", "workflow_id": "ro-1.rel-1.1"}
    elif kind == "Notify":
        body = {"rollout_id": rollout_id, "kind": "completed", "message": "done"}
    elif kind == "RequestApproval":
        body = {"rollout_id": rollout_id, "reason": "production stage"}
    else:
        body = {"device_id": device_id}
    return kind, {**body, **meta}


# (kind of the poison message, the device or rollout that makes it fail, the reason it keeps)
POISON = [
    ("WriteDirector", REFUSED_DEVICE, "ro-1", "refused"),
    ("OfferRelease", POISON_DEVICE, "ro-1", "ghost"),
    ("RevokeOffer", POISON_DEVICE, "ro-1", "ghost"),
    ("Notify", "dev-a", POISON_ROLLOUT, "webhook answered 500"),
    ("RequestApproval", "dev-a", POISON_ROLLOUT, "webhook answered 500"),
    ("Unheard", "dev-z", "ro-1", "unknown kind"),
]


@dataclass
class Outbox:
    storage: Storage
    config: EngineConfig = RETRIES
    now: datetime = T0

    def __post_init__(self) -> None:
        self.hub = MemoryHubGateway(clock=lambda: self.now)
        for device_id in GOOD:
            self.hub.register_device(device_id)
        self.director = RefusingDirector()
        self.notifier = RefusingNotifier()
        self.restart()

    def restart(self) -> None:
        self.dispatcher = Dispatcher(
            self.storage, self.hub, self.director, self.notifier, self.config
        )

    def queue(self, *messages: tuple[str, dict[str, Any]]) -> list[int]:
        with self.storage.begin() as uow:
            return [uow.outbox.append(kind, payload, self.now) for kind, payload in messages]

    def run(self, after: timedelta = timedelta(0)) -> int:
        self.now += after
        return self.dispatcher.run_once(self.now)

    def state(self, message_id: int) -> Any:
        with self.storage.begin(readonly=True) as uow:
            return uow.outbox.get(message_id)

    def workflow(self, device_id: str) -> Any:
        service = self.hub.desired(device_id).get(COMPONENT, {}).get("service", {})
        return (service.get("workflow") or {}).get("action")


def _good_messages() -> list[tuple[str, dict[str, Any]]]:
    """Every kind, for devices and a rollout that work: what must keep flowing."""
    return [
        _message("WriteDirector", "dev-a", "ro-1", 10),
        _message("OfferRelease", "dev-a", "ro-1", 11),
        _message("WriteDirector", "dev-b", "ro-1", 12),
        _message("OfferRelease", "dev-b", "ro-1", 13),
        _message("Notify", "dev-a", "ro-1", 14),
        _message("RequestApproval", "dev-a", "ro-1", 15),
    ]


@pytest.mark.parametrize(
    ("kind", "target", "rollout", "reason"), POISON, ids=[p[0] for p in POISON]
)
def test_a_poison_message_is_parked_and_the_others_are_delivered(
    storage: Storage, kind: str, target: str, rollout: str, reason: str
) -> None:
    box = Outbox(storage)
    (poison,) = box.queue(_message(kind, target, rollout, 0))
    good = box.queue(*_good_messages())

    assert box.run() == len(good)  # the first round delivers everything behind the poison
    assert box.director.assigned == {"dev-a": "rel-1", "dev-b": "rel-1"}
    assert box.workflow("dev-a") == box.workflow("dev-b") == 3  # deploy
    assert {n.kind for n in box.notifier.notices.values()} == {"completed", "approval"}
    first = box.state(poison)
    assert (first.state, first.attempts) == ("retrying", 1)
    assert first.next_attempt_at == box.now + timedelta(seconds=10)
    assert reason in first.last_error

    assert box.run(timedelta(seconds=9)) == 0 and box.state(poison).attempts == 1  # backing off
    box.run(timedelta(seconds=1))
    assert box.state(poison).next_attempt_at == box.now + timedelta(seconds=15)  # capped
    box.run(timedelta(seconds=15))
    parked = box.state(poison)
    assert (parked.state, parked.attempts, parked.parked_at) == ("parked", 3, box.now)
    assert reason in parked.last_error
    box.run(timedelta(hours=1))
    assert box.state(poison).attempts == 3  # parked: never tried again by itself

    with storage.begin(readonly=True) as uow:
        entries = [e for e in uow.audit.entries(limit=100) if e.action == "outbox.park"]
        assert uow.outbox.pending() == 1
    assert [(e.subject, e.details["kind"]) for e in entries] == [(f"outbox:{poison}", kind)]
    assert reason in entries[0].details["reason"]


def test_a_device_lane_waits_for_its_failing_director_write_then_goes_on_once_parked(
    storage: Storage,
) -> None:
    box = Outbox(storage)
    write, offer = box.queue(
        _message("WriteDirector", REFUSED_DEVICE, "ro-1", 0),
        _message("OfferRelease", REFUSED_DEVICE, "ro-1", 1),
    )
    (other,) = box.queue(_message("WriteDirector", "dev-a", "ro-1", 2))
    assert box.run() == 1  # dev-a's write; the offer waits behind its device's director write
    assert box.workflow(REFUSED_DEVICE) is None
    waiting = box.state(offer)
    assert (waiting.state, waiting.next_attempt_at) == ("queued", box.state(write).next_attempt_at)
    assert box.state(other).state == "dispatched"

    box.director.refused.clear()  # the director accepts the device now: the retry succeeds
    box.run(timedelta(seconds=10))
    assert box.director.assigned[REFUSED_DEVICE] == "rel-1"
    assert box.workflow(REFUSED_DEVICE) == 3
    assert box.state(write).state == box.state(offer).state == "dispatched"


def test_a_restart_keeps_attempts_back_off_and_parking(storage: Storage) -> None:
    box = Outbox(storage)
    (poison,) = box.queue(_message("OfferRelease", POISON_DEVICE, "ro-1", 0))
    box.run()
    box.restart()
    assert box.run(timedelta(seconds=5)) == 0
    assert box.state(poison).attempts == 1  # the back-off survived the restart
    box.run(timedelta(seconds=5))
    box.run(timedelta(seconds=15))
    assert box.state(poison).state == "parked"

    box.restart()
    box.run(timedelta(hours=1))
    assert box.state(poison).attempts == 3
    (later,) = box.queue(_message("OfferRelease", "dev-a", "ro-1", 1))
    assert box.run() == 1 and box.state(later).state == "dispatched"

    box.hub.register_device(POISON_DEVICE)  # the operator fixed the cause, then retries
    with storage.begin() as uow:
        uow.outbox.retry(poison, box.now)
    box.restart()
    assert box.run() == 1 and box.state(poison).state == "dispatched"


def test_a_message_dropped_while_it_runs_does_not_undo_the_round(storage: Storage) -> None:
    box = Outbox(storage)
    (poison,) = box.queue(_message("Notify", "dev-a", POISON_ROLLOUT, 0))
    box.run()
    (good,) = box.queue(_message("OfferRelease", "dev-a", "ro-1", 1))

    box.notifier = DroppingNotifier(storage=storage, victim=poison, box=box)  # an admin drops it
    box.restart()
    assert box.run(timedelta(seconds=10)) == 1
    assert box.state(poison).state == "dropped"
    assert box.state(good).state == "dispatched"
