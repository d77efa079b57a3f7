"""The dispatcher: executes the engine's outbox through the ports, then marks it dispatched.

Delivery is at least once (a crash after executing and before marking repeats the message), so
every execution is idempotent:
- `WriteDirector`: assigning the release the device already has changes nothing.
- `OfferRelease`: skipped when the device's desired workflow already is this workflow id.
- `RevokeOffer`: acts only while the desired workflow still is the revoked one (a newer offer is
  never cancelled by a stale revoke); writing `cancel` again and revoking the director entry
  again are harmless.
- `Notify`/`RequestApproval`: delivered with the key (rollout, version, position).
Messages run in outbox order, and a failing message stops the round (the ones after it wait),
so a device's director metadata is always written before its offer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from device_agent.protocol import WorkflowAction
from service.engine._config import EngineConfig
from service.engine._engine import Hook
from service.engine._errors import DispatchError
from service.engine._ports import DirectorPort, Notice, Notifier
from service.hubgateway import HubGateway, HubGatewayError, ServiceSpec
from service.storage import OutboxMessage, Storage

__all__ = ["Dispatcher"]


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

    def use_config(self, config: EngineConfig) -> None:
        """Write offers from now on with `config`'s URLs (e.g. a fresh signed grant)."""
        self._config = config

    def run_once(self, now: datetime) -> int:
        """Claim a batch, execute it in order, mark what ran. Returns how many were dispatched.

        A message a port refuses (`DispatchError`) stays queued with the ones after it; the
        next round retries it.
        """
        with self._storage.begin() as uow:
            messages = uow.outbox.claim(limit=self._config.dispatch_batch)
        self._hook("dispatch.claimed")
        done: list[int] = []
        try:
            for message in messages:
                self._execute(message, now)
                done.append(message.id)
                self._hook("dispatch.executed")
        except DispatchError:
            pass  # keep order: the rest waits for the next round
        if done:
            with self._storage.begin() as uow:
                uow.outbox.mark_dispatched(done, now)
            self._hook("dispatch.marked")
        return len(done)

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
            query=c.query,
        )

    def _desired_workflow(self, device_id: str) -> tuple[str | None, int | None]:
        desired = self._hub.get_twin(device_id).desired_service or {}
        workflow = desired.get("workflow")
        if not isinstance(workflow, Mapping):
            return None, None
        wid, action = workflow.get("id"), workflow.get("action")
        return (
            wid if isinstance(wid, str) else None,
            action if isinstance(action, int) else None,
        )

    def _offer(self, device_id: str, workflow_id: str) -> None:
        if self._desired_workflow(device_id) != (workflow_id, int(WorkflowAction.DEPLOY)):
            self._hub.set_desired_service(
                device_id, self._spec(device_id, WorkflowAction.DEPLOY, workflow_id)
            )

    def _revoke(self, device_id: str, workflow_id: str, now: datetime) -> None:
        wid, action = self._desired_workflow(device_id)
        if wid != workflow_id:
            return  # a newer offer (or nothing) is desired: the revoke is stale
        if action != int(WorkflowAction.CANCEL):
            self._hub.set_desired_service(
                device_id, self._spec(device_id, WorkflowAction.CANCEL, workflow_id)
            )
        self._director.revoke(device_id, now)


def _notice(kind: str, p: Mapping[str, Any]) -> Notice:
    key = f"{p['origin']}:{p['version']}:{p['position']}"
    if kind == "RequestApproval":
        return Notice(p["rollout_id"], "approval", str(p["reason"]), key)
    return Notice(p["rollout_id"], str(p["kind"]), str(p["message"]), key)
