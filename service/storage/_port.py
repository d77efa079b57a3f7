"""The storage port: what the engine and the API may ask of a database.

Work happens in a unit of work: `with storage.begin() as uow: ...` commits when the block ends
and rolls back when it raises, so the engine saves a rollout's new state and the commands it
emits (outbox) together or not at all. Keep units short: no network calls inside one.

Every method raises only `StorageError` subclasses (see `_errors.py`) or `ValueError` for
misuse. Listings are keyset-paginated by primary key: pass the returned `next_after` back.
Time is a parameter (`now`); storage never reads the clock.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from service.storage._records import (
    ApiToken,
    AuditEntry,
    ChainReport,
    Device,
    DeviceFilter,
    DeviceGroup,
    DeviceJob,
    IssuedToken,
    Lease,
    OutboxMessage,
    Page,
    Release,
    Role,
    Rollout,
    RolloutStage,
)

__all__ = [
    "MAX_OUTBOX_ERROR",
    "AuditLog",
    "DeviceGroups",
    "DeviceJobs",
    "Devices",
    "EngineLeases",
    "Outbox",
    "Releases",
    "Rollouts",
    "Storage",
    "Tokens",
    "UnitOfWork",
]

MAX_PAGE = 10_000
MAX_OUTBOX_ERROR = 1000  # characters of a failed message's last error that are kept
# A job in one of these states holds its device: no other rollout may offer it anything.
LIVE_JOB_STATES = (
    "offered",
    "downloading",
    "verifying",
    "transferring",
    "staged",
    "activating",
    "soaking",
    "cancelling",
)


def job_cursor(job: DeviceJob) -> str:
    """The page cursor after `job`: device and release (release ids never contain '|')."""
    return f"{job.device_id}|{job.release_id}"


def parse_job_cursor(after: str) -> tuple[str, str | None]:
    """(device, release) of a cursor; a bare device id means "after every job of it"."""
    device_id, sep, release_id = after.rpartition("|")
    return (device_id, release_id) if sep else (after, None)


def check_limit(limit: int) -> None:
    """Refuse a page size outside 1..MAX_PAGE (a caller bug, so ValueError)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be in 1..{MAX_PAGE}, got {limit}")


class Devices(Protocol):
    def upsert(self, devices: Iterable[Device]) -> int:
        """Insert or replace devices by id (created_at of existing rows is kept); returns count."""

    def get(self, device_id: str) -> Device:
        """Raises NotFoundError."""

    def list(
        self, where: DeviceFilter, *, after: str | None = None, limit: int = 100
    ) -> Page[Device]:
        """Devices matching `where` with id > `after`, by id; `limit` in 1..MAX_PAGE."""

    def count(self, where: DeviceFilter) -> int: ...

    def hardware_ids(self, device_ids: Sequence[str]) -> dict[str, str]:
        """Device id -> hardware id for the listed devices that exist (one query per chunk)."""


class DeviceGroups(Protocol):
    def put(self, group: DeviceGroup) -> None:
        """Create or replace a group by id."""

    def get(self, group_id: str) -> DeviceGroup:
        """Raises NotFoundError."""

    def list(self) -> builtins.list[DeviceGroup]: ...

    def delete(self, group_id: str) -> None:
        """Raises NotFoundError; ConflictError while a rollout refers to it."""

    def members(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[Device]:
        """The group's current members (membership is dynamic). Raises NotFoundError."""

    def member_ids(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[str]:
        """The group's members among the next `limit` devices after `after` (by id), without
        loading them (planning a million). A page may hold fewer than `limit` ids, even none,
        and still have a `next_after`: keep paging until it is None."""

    def members_among(self, group_id: str, device_ids: Sequence[str]) -> set[str]:
        """Which of `device_ids` are the group's members now (a few queries of bounded
        IN lists, whatever the number of ids). Raises NotFoundError."""


class Releases(Protocol):
    def create(self, release: Release) -> None:
        """Raises AlreadyExistsError if the id is taken: releases are immutable."""

    def get(self, release_id: str) -> Release:
        """Raises NotFoundError."""

    def list(self, *, after: str | None = None, limit: int = 100) -> Page[Release]: ...


class Rollouts(Protocol):
    def create(self, rollout: Rollout) -> Rollout:
        """Store a new rollout at revision 1 and return it. AlreadyExistsError, NotFoundError
        (group or release missing)."""

    def get(self, rollout_id: str) -> Rollout:
        """Raises NotFoundError."""

    def save(self, rollout: Rollout, expected_revision: int) -> Rollout:
        """Write the rollout if the stored revision is `expected_revision`; returns it at the
        next revision. Raises RevisionConflictError otherwise, NotFoundError if missing."""

    def list(
        self, *, states: Sequence[str] | None = None, group_id: str | None = None
    ) -> builtins.list[Rollout]: ...

    def put_stage(self, stage: RolloutStage) -> None:
        """Create or replace one stage of a rollout. Raises NotFoundError (rollout)."""

    def stages(self, rollout_id: str) -> builtins.list[RolloutStage]:
        """The rollout's stages by index."""


class DeviceJobs(Protocol):
    """A job is keyed by (rollout, device, release): a rollback adds a second job per device.
    Where `release_id` is optional, None means the rollout's own (forward) release; listings
    and counts with None cover every release. Page cursors (`after`) are opaque strings."""

    def add(self, jobs: Iterable[DeviceJob]) -> int:
        """Insert jobs; a job whose (rollout, device, release) exists is left alone, so a replay
        after a crash is harmless. Returns how many were inserted. Raises NotFoundError when the
        rollout, a device or a release does not exist; let the unit of work roll back then."""

    def plan(
        self,
        rollout_id: str,
        release_id: str,
        rows: Iterable[tuple[str, int, int]],
        now: datetime,
    ) -> int:
        """Bulk-insert the PENDING jobs `(device_id, stage, order_key)` of a rollout created in
        this unit (it has no jobs yet): the fastest path the database offers (COPY on
        PostgreSQL). The caller guarantees that the devices exist (it read their ids in this
        unit): unlike `add`, nothing checks them. Returns how many. Raises ConflictError (a job
        exists)."""

    def get(self, rollout_id: str, device_id: str, release_id: str | None = None) -> DeviceJob:
        """Raises NotFoundError."""

    def update(self, job: DeviceJob, *, expected_state: str | None = None) -> None:
        """Replace a job; with `expected_state`, only if it is still in that state.
        Raises NotFoundError, ConflictError (state moved on)."""

    def transition(
        self,
        rollout_id: str,
        device_ids: Sequence[str],
        *,
        from_states: Sequence[str],
        to_state: str,
        now: datetime,
        reason: str | None = None,
        next_attempt_at: datetime | None = None,
        offered: bool = False,
        count_attempt: bool = False,
        release_id: str | None = None,
    ) -> int:
        """Move the listed jobs that are in one of `from_states` to `to_state` in one statement;
        `offered` stamps offered_at=now, `count_attempt` adds one attempt. Returns rows moved."""

    def offer(
        self,
        rollout_id: str,
        release_id: str,
        device_ids: Sequence[str],
        now: datetime,
        deadline: datetime | None = None,
    ) -> int:
        """PENDING -> OFFERED for the listed jobs, in one statement per chunk: attempts + 1,
        offered_at = now, next_attempt_at = `deadline` (the offer's timeout, None for none),
        reason kept. Returns rows moved."""

    def transition_all(
        self,
        rollout_id: str,
        *,
        release_id: str,
        from_states: Sequence[str],
        to_state: str,
        now: datetime,
        reason: str | None = None,
    ) -> int:
        """Move every job of the rollout's `release_id` in `from_states` to `to_state` in one
        statement, clearing `next_attempt_at` (cancelling a million PENDING jobs at once)."""

    def list(
        self,
        rollout_id: str,
        *,
        states: Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
        release_id: str | None = None,
    ) -> Page[DeviceJob]:
        """By (device, release)."""

    def count_by_state(
        self, rollout_id: str, *, stage: int | None = None, release_id: str | None = None
    ) -> dict[str, int]: ...

    def figures(self, rollout_id: str) -> dict[tuple[str, int], dict[str, int]]:
        """Job counts of the rollout by (release, stage) and state, in one grouped query."""

    def candidates(
        self, rollout_id: str, release_id: str, *, max_stage: int, now: datetime, limit: int
    ) -> builtins.list[DeviceJob]:
        """PENDING jobs of the release in stages <= `max_stage` whose retry wait is over
        (`next_attempt_at` null or <= now) and whose device has no live job (`LIVE_JOB_STATES`) in
        another rollout, by (stage, order_key, device); at most `limit` (1..MAX_PAGE)."""

    def joiners(
        self, rollout_id: str, group_id: str, *, after: str | None = None, scan: int = 1000
    ) -> Page[str]:
        """Among the next `scan` devices after `after` (by id), the group's current members
        that have no job in the rollout. `next_after` is where the scan stopped, None once it
        reached the last device: a caller walks a million devices a bounded window per call.
        Raises NotFoundError (group); `scan` is 1..MAX_PAGE."""

    def due(self, now: datetime, *, limit: int = 100) -> builtins.list[DeviceJob]:
        """Jobs whose next_attempt_at <= now, earliest first."""

    def for_device(self, device_id: str) -> builtins.list[DeviceJob]:
        """Every job of one device, across rollouts (to refuse conflicting offers)."""


class Outbox(Protocol):
    def append(self, kind: str, payload: Mapping[str, Any], now: datetime) -> int:
        """Queue a command; returns its id (ids grow)."""

    def claim(
        self, *, limit: int = 100, now: datetime | None = None
    ) -> builtins.list[OutboxMessage]:
        """Undispatched, unparked messages, oldest first; with `now`, only those due (no
        `next_attempt_at` after `now`). On PostgreSQL the rows stay locked (SKIP LOCKED)
        until the unit of work ends, so two dispatchers never claim the same message."""

    def fail(
        self, message_id: int, *, error: str, now: datetime, retry_at: datetime | None
    ) -> OutboxMessage:
        """Count a failed attempt and keep its error (cut to MAX_OUTBOX_ERROR chars): retry at
        `retry_at`, or park it (`retry_at` None). Raises NotFoundError unless undispatched."""

    def defer(self, ids: Sequence[int], until: datetime) -> int:
        """Hold undispatched, unparked messages until `until` (no attempt counted)."""

    def failing(self, *, after_id: int = 0, limit: int = 100) -> builtins.list[OutboxMessage]:
        """Undispatched messages that failed at least once (retrying or parked), oldest
        first, ids after `after_id`."""

    def get(self, message_id: int) -> OutboxMessage:
        """Raises NotFoundError."""

    def retry(self, message_id: int, now: datetime) -> OutboxMessage:
        """A failed (retrying or parked) message: due at `now` with its attempts reset; its
        last error stays. Raises NotFoundError, or ConflictError if it never failed."""

    def drop(self, message_id: int, now: datetime) -> OutboxMessage:
        """A failed message is given up: parked and dispatched at `now`, never executed.
        Raises NotFoundError, or ConflictError if it never failed."""

    def append_many(self, messages: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        """Queue several commands in order (one statement); ids grow in list order."""

    def mark_dispatched(self, ids: Sequence[int], now: datetime) -> int: ...

    def pending(self) -> int: ...


class AuditLog(Protocol):
    def append(
        self, *, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        """Append one entry, chained to the last one."""

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> builtins.list[AuditEntry]: ...

    def verify_chain(self) -> ChainReport:
        """Recompute every link and report the first broken one."""


class Tokens(Protocol):
    def create(self, name: str, role: Role, now: datetime) -> IssuedToken:
        """Issue a token; its secret is returned once and stored only as a hash. Names are
        unique (a name is an audit actor): AlreadyExistsError when `name` is taken."""

    def verify(self, secret: str) -> ApiToken | None:
        """The live token for this secret, or None (unknown or revoked)."""

    def revoke(self, token_id: str, now: datetime) -> None:
        """Raises NotFoundError. Revoking twice keeps the first time."""

    def list(self) -> builtins.list[ApiToken]: ...


class EngineLeases(Protocol):
    def acquire(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        """Take the lease if free, expired or already ours; None if someone else holds it."""

    def renew(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease:
        """Extend our lease. Raises LeaseLostError if it is not ours or has expired."""

    def release(self, name: str, holder: str) -> None:
        """Give the lease up if we hold it (no error otherwise)."""


class UnitOfWork(Protocol):
    """The repositories of one unit of work; all of them share its transaction."""

    @property
    def devices(self) -> Devices: ...

    @property
    def groups(self) -> DeviceGroups: ...

    @property
    def releases(self) -> Releases: ...

    @property
    def rollouts(self) -> Rollouts: ...

    @property
    def jobs(self) -> DeviceJobs: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def tokens(self) -> Tokens: ...

    @property
    def leases(self) -> EngineLeases: ...


class Storage(Protocol):
    def begin(self, *, readonly: bool = False) -> AbstractContextManager[UnitOfWork]:
        """A unit of work: commit on normal exit, roll back on an exception.
        `readonly` lets SQLite readers run alongside the writer."""

    def close(self) -> None: ...
