"""Commands: what the domain asks the engine to do, as data.

The engine saves a decision's new state and its commands in one transaction (the outbox), then
dispatches the commands. Each command is idempotent on its own key, so a dispatcher that crashes
after delivering and before marking it done may deliver it again without harm:
`WriteDirector`/`OfferRelease` on (device, workflow id), `RevokeOffer` on (device, workflow id),
the rest on (rollout id, the rollout version that emitted them, position in the list).

Order matters within a decision: `WriteDirector` for a device always comes right before its
`OfferRelease`, so the device never sees a workflow whose signed director metadata is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Command",
    "Notify",
    "OfferRelease",
    "RequestApproval",
    "RevokeOffer",
    "RevokeOffers",
    "StartRollback",
    "WriteDirector",
]


@dataclass(frozen=True)
class WriteDirector:
    """Sign director targets naming `release_id` for the device (`DirectorRepository.assign`)."""

    device_id: str
    release_id: str


@dataclass(frozen=True)
class OfferRelease:
    """Write the device's desired workflow (action deploy, id `workflow_id`)."""

    rollout_id: str
    device_id: str
    release_id: str
    workflow_id: str


@dataclass(frozen=True)
class RevokeOffer:
    """Write the desired workflow action cancel for `workflow_id` and revoke the director entry."""

    rollout_id: str
    device_id: str
    workflow_id: str


@dataclass(frozen=True)
class RevokeOffers:
    """Cancel every job of the rollout that has not activated (each yields its `RevokeOffer`)."""

    rollout_id: str
    reason: str


@dataclass(frozen=True)
class StartRollback:
    """In one transaction: for each job where `jobs.needs_rollback` holds, save the job that
    `jobs.rollback_job` returns (if any) and apply `Supersede` if the job is still live; apply
    `Cancel` (which revokes the offer) to every other live job; then feed `RollbackPlanned(n)`
    with n the number of rollback jobs saved."""

    rollout_id: str
    to_release_id: str
    reason: str


@dataclass(frozen=True)
class RequestApproval:
    """Ask operators to approve the next stage (or the start of a production rollout)."""

    rollout_id: str
    stage: int
    reason: str


@dataclass(frozen=True)
class Notify:
    """Tell operators something happened (`kind` is a short code, e.g. `failure-threshold`)."""

    rollout_id: str
    kind: str
    message: str


Command: TypeAlias = (
    WriteDirector
    | OfferRelease
    | RevokeOffer
    | RevokeOffers
    | StartRollback
    | RequestApproval
    | Notify
)
