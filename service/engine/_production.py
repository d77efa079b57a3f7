"""The two-person rule's input: which devices are production, decided from the devices a
rollout reaches (not from its group's flag alone).

A device is production if it is a member of any production group now. Groups overlap and
flags change, so the engine asks at creation (the spec's `production`), at Start (the spec is
raised before the approvals are checked) and at every offer (`Candidate.production`).

Invariants: membership is read in the caller's unit of work, so the answer and the decision
built on it are consistent; every lookup is a few bounded IN queries per production group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from service.domain.rollout import Rollout
from service.storage import MAX_PAGE, UnitOfWork

__all__ = ["production_devices", "with_production"]


def production_devices(uow: UnitOfWork, device_ids: Sequence[str]) -> set[str]:
    """The devices among `device_ids` that are members of a production group."""
    found: set[str] = set()
    if not device_ids:
        return found
    for group in uow.groups.list():
        if group.production:
            found |= uow.groups.members_among(group.id, device_ids)
    return found


def with_production(uow: UnitOfWork, rollout: Rollout) -> Rollout:
    """`rollout` with `spec.production` set if any device it has a job for is production now
    (called at Start: a flag turned off, or an overlapping group, does not skip approval)."""
    spec = rollout.spec
    after: str | None = None
    while not spec.production:
        page = uow.jobs.list(spec.rollout_id, after=after, limit=MAX_PAGE)
        if production_devices(uow, [j.device_id for j in page.items]):
            return replace(rollout, spec=replace(spec, production=True))
        if page.next_after is None:
            break
        after = page.next_after
    return rollout
