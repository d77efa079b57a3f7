"""The dispatcher: executes the engine's outbox through the ports, then marks it dispatched.

Delivery is at least once (a crash after executing and before marking repeats the message), so
every execution is idempotent:
- `WriteDirector`: assigning the release the device already has changes nothing.
- `OfferRelease`: skipped when the device's desired workflow already is this workflow id.
- `RevokeOffer`: acts only while the desired workflow still is the revoked one (a newer offer is
  never cancelled by a stale revoke); writing `cancel` again and revoking the director entry
  again are harmless.
- `Notify`/`RequestApproval`: delivered with the key (rollout, version, position).
Messages run in outbox order within a lane (one device, or one rollout for notices), so a
device's director metadata is written before its offer. One message never stops the others:

- a message that fails (any error: the hub refusing it, the director refusing its device, a
  malformed payload) counts an attempt, keeps its error and backs off (`EngineConfig.retry_delay`);
  the later messages of its lane wait for it (deferred to its next attempt), other lanes go on;
- after `dispatch_max_attempts` failures it is parked with its reason and an audit entry
  (`outbox.park`); an operator retries or drops it (`tinyfleet outbox`). A parked message no longer
  holds its lane: what comes after it goes out (an offer whose director write was parked then
  fails on the device, visibly, rather than stalling the device forever).

All of this is stored with the message, so a restart neither forgets nor repeats a back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from device_agent.protocol import WorkflowAction
from service.engine._config import EngineConfig
from service.engine._engine import Hook
from service.engine._errors import DispatchError
from service.engine._ports import DirectorPort, Notice, Notifier
from service.hubgateway import DeviceTwin, HubGateway, HubGatewayError, ServiceSpec
from service.storage import MAX_PAGE, NotFoundError, OutboxMessage, Storage, UnitOfWork

__all__ = ["Dispatcher"]

_log = logging.getLogger(__name__)


def _no_hook(step: str) -> None:
    return None


class Dispatcher:
    def __init__(
        self,
        storage: Storage,
        hub: HubGateway,
        director: DirectorPort,
        notifier: Notifier,
        config: EngineConfig,
        *,
        hook: Hook = _no_hook,
    ) -> None:
        self._storage = storage
        self._hub = hub
        self._director = director
        self._notifier = notifier
        self._config = config
        self._hook = hook
        self._desired: dict[str, tuple[str | None, int | None]] = {}  # this round's (see run_once)

    def use_config(self, config: EngineConfig) -> None:
        """Write offers from now on with `config`'s URLs (e.g. a fresh signed grant)."""
        self._config = config

    def run_once(self, now: datetime) -> int:
        """Claim the due messages, execute them lane by lane, store what ran and what failed.
        Returns how many were dispatched."""
        with self._storage.begin() as uow:
            messages = uow.outbox.claim(limit=self._config.dispatch_batch, now=now)
            held = self._held_lanes(uow.outbox.failing(limit=MAX_PAGE), now)
        self._hook("dispatch.claimed")
        self._desired = self._desired_workflows(messages)
        done: list[int] = []
        failures: list[tuple[OutboxMessage, str]] = []
        deferred: dict[datetime, list[int]] = {}
        for message in messages:
            lane = _lane(message)
            blocker = held.get(lane) if lane is not None else None
            if blocker is not None and blocker[0] < message.id:
                deferred.setdefault(blocker[1], []).append(message.id)
                continue
            try:
                self._execute(message, now)
            except Exception as exc:  # whatever fails is this message's, not the round's
                error = _describe(exc)
                _log.warning("outbox message %d (%s) failed: %s", message.id, message.kind, error)
                failures.append((message, error))
                retry_at = self._retry_at(message, now)
                if lane is not None and retry_at is not None:
                    held.setdefault(lane, (message.id, retry_at))
                continue
            done.append(message.id)
            self._hook("dispatch.executed")
        if done or failures or deferred:
            with self._storage.begin() as uow:
                if done:
                    uow.outbox.mark_dispatched(done, now)
                for message, error in failures:
                    self._record_failure(uow, message, error, now)
                for until, ids in deferred.items():
                    uow.outbox.defer(ids, until)
            self._hook("dispatch.marked")
        return len(done)

    def _retry_at(self, message: OutboxMessage, now: datetime) -> datetime | None:
        attempts = message.attempts + 1
        if attempts >= self._config.dispatch_max_attempts:
            return None
        return now + self._config.retry_delay(attempts)

    def _record_failure(
        self, uow: UnitOfWork, message: OutboxMessage, error: str, now: datetime
    ) -> None:
        retry_at = self._retry_at(message, now)
        try:
            failed = uow.outbox.fail(message.id, error=error, now=now, retry_at=retry_at)
        except NotFoundError:
            return  # dropped (or delivered by another dispatcher) meanwhile
        if retry_at is None:
            uow.audit.append(
                at=now,
                actor="engine",
                action="outbox.park",
                subject=f"outbox:{message.id}",
                details={
                    "kind": message.kind,
                    "attempts": failed.attempts,
                    "reason": failed.last_error,
                    **_subject(message),
                },
            )

    @staticmethod
    def _held_lanes(failing: list[OutboxMessage], now: datetime) -> dict[str, tuple[int, datetime]]:
        """Lanes whose oldest failed message is backing off: (its id, when it is due)."""
        held: dict[str, tuple[int, datetime]] = {}
        for message in failing:
            lane = _lane(message)
            due = message.next_attempt_at
            if lane is None or message.parked_at is not None or due is None or due <= now:
                continue
            held.setdefault(lane, (message.id, due))
        return held

    def _execute(self, message: OutboxMessage, now: datetime) -> None:
        p = message.payload
        try:
            if message.kind == "WriteDirector":
                self._director.assign(p["device_id"], p["hardware_id"], p["release_id"], now)
            elif message.kind == "OfferRelease":
                self._offer(p["device_id"], p["workflow_id"])
            elif message.kind == "RevokeOffer":
                self._revoke(p["device_id"], p["workflow_id"], now)
            elif message.kind in ("Notify", "RequestApproval"):
                self._notifier.notify(_notice(message.kind, p))
            else:
                raise DispatchError(f"outbox message {message.id}: unknown kind {message.kind!r}")
        except HubGatewayError as exc:
            raise DispatchError(f"outbox message {message.id} ({message.kind}): {exc}") from exc

    def _spec(self, device_id: str, action: WorkflowAction, workflow_id: str) -> ServiceSpec:
        c = self._config
        return ServiceSpec(
            action=action,
            workflow_id=workflow_id,
            image_url=c.image_url,
            director_url=c.director_url_for(device_id),
            targets_url=c.targets_url,
            query=c.query_for(device_id),
        )

    def _desired_workflows(
        self, messages: list[OutboxMessage]
    ) -> dict[str, tuple[str | None, int | None]]:
        """The desired workflow of every device an offer or revoke of the round names, read in
        batched twin queries (`get_twins`: one per 100 devices, not one call per message); the
        round then keeps it current with its own writes (`_set_desired`). A device the hub does
        not know is left out and read alone when its message runs, so its failure is that
        message's; a hub that cannot answer fails the round before anything ran (no attempt is
        counted against the messages: they are claimed again next round)."""
        wanted = [
            m.payload["device_id"]
            for m in messages
            if m.kind in _TWIN_KINDS
            and isinstance(m.payload, Mapping)
            and isinstance(m.payload.get("device_id"), str)
        ]
        if not wanted:
            return {}
        twins = self._hub.get_twins(list(dict.fromkeys(wanted)))
        return {device_id: _workflow_of(twin) for device_id, twin in twins.items()}

    def _desired_workflow(self, device_id: str) -> tuple[str | None, int | None]:
        known = self._desired.get(device_id)
        if known is not None:
            return known
        return _workflow_of(self._hub.get_twin(device_id))

    def _set_desired(self, device_id: str, action: WorkflowAction, workflow_id: str) -> None:
        self._desired.pop(device_id, None)  # unknown if the write fails half-way
        self._hub.set_desired_service(device_id, self._spec(device_id, action, workflow_id))
        self._desired[device_id] = (workflow_id, int(action))

    def _offer(self, device_id: str, workflow_id: str) -> None:
        if self._desired_workflow(device_id) != (workflow_id, int(WorkflowAction.DEPLOY)):
            self._set_desired(device_id, WorkflowAction.DEPLOY, workflow_id)

    def _revoke(self, device_id: str, workflow_id: str, now: datetime) -> None:
        wid, action = self._desired_workflow(device_id)
        if wid != workflow_id:
            return  # a newer offer (or nothing) is desired: the revoke is stale
        if action != int(WorkflowAction.CANCEL):
            self._set_desired(device_id, WorkflowAction.CANCEL, workflow_id)
        self._director.revoke(device_id, now)


_TWIN_KINDS = frozenset({"OfferRelease", "RevokeOffer"})


def _workflow_of(twin: DeviceTwin) -> tuple[str | None, int | None]:
    desired = twin.desired_service or {}
    workflow = desired.get("workflow")
    if not isinstance(workflow, Mapping):
        return None, None
    wid, action = workflow.get("id"), workflow.get("action")
    return (
        wid if isinstance(wid, str) else None,
        action if isinstance(action, int) else None,
    )


def _lane(message: OutboxMessage) -> str | None:
    """Messages of one lane run in order: a device's, else a rollout's notices."""
    p = message.payload
    device_id = p.get("device_id") if isinstance(p, Mapping) else None
    if isinstance(device_id, str):
        return f"device:{device_id}"
    rollout_id = p.get("rollout_id") if isinstance(p, Mapping) else None
    return f"rollout:{rollout_id}" if isinstance(rollout_id, str) else None


def _subject(message: OutboxMessage) -> dict[str, str]:
    p = message.payload
    return {k: p[k] for k in ("device_id", "rollout_id") if isinstance(p.get(k), str)}


def _describe(exc: BaseException) -> str:
    """The error a failed message keeps: its type and message, never a traceback."""
    if isinstance(exc, DispatchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _notice(kind: str, p: Mapping[str, Any]) -> Notice:
    key = f"{p['origin']}:{p['version']}:{p['position']}"
    if kind == "RequestApproval":
        return Notice(p["rollout_id"], "approval", str(p["reason"]), key)
    return Notice(p["rollout_id"], str(p["kind"]), str(p["message"]), key)
