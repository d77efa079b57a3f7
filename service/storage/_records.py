"""The records the storage port reads and writes: frozen dataclasses, owned by no adapter.

Invariants every adapter relies on (checked in `__post_init__`, so a bad record never reaches
a database):
- every datetime is timezone-aware; adapters return them in UTC;
- ids and names are non-empty strings of at most 200 characters;
- a group's selector parses (see `group_filter`) and its time zone is a known IANA zone;
- revisions, counters, attempts and stage indexes are non-negative.
JSON fields hold JSON-compatible values only; the adapters store them as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ApiToken",
    "AuditEntry",
    "ChainReport",
    "Device",
    "DeviceFilter",
    "DeviceGroup",
    "DeviceJob",
    "GroupKind",
    "IssuedToken",
    "Lease",
    "OutboxMessage",
    "Page",
    "Release",
    "Role",
    "Rollout",
    "RolloutStage",
    "check_membership",
    "group_filter",
]

MAX_ID = 200
T = TypeVar("T")


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _ident(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID} characters")


def _non_negative(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    hardware_id: str
    created_at: datetime
    profile: str = ""
    agent_version: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    reported: Mapping[str, Any] = field(default_factory=dict)  # per-core state, as reported
    last_seen: datetime | None = None

    def __post_init__(self) -> None:
        _ident("device id", self.id)
        _ident("hardware id", self.hardware_id)
        _aware("created_at", self.created_at)
        _aware("last_seen", self.last_seen)


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """All given conditions must hold. `last_seen_after` is inclusive, `_before` exclusive.

    `hardware_id`, `profile` and `agent_version` match the device's column and, where the
    device reported the field itself (`reported`), its report too: a device-written value can
    only take a device out of a filter, never put it in one the column does not match.
    `membership`: the filter defines a group's members, which come from operator-set twin tags
    only; with `membership` and no `tags`, it matches no device (fail closed).
    """

    hardware_id: str | None = None
    profile: str | None = None
    agent_version: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    last_seen_after: datetime | None = None
    last_seen_before: datetime | None = None
    membership: bool = False

    def __post_init__(self) -> None:
        _aware("last_seen_after", self.last_seen_after)
        _aware("last_seen_before", self.last_seen_before)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; pass `next_after` back to get the next page."""

    items: list[T]
    next_after: str | None


class GroupKind(StrEnum):
    TAG = "tag"  # selector "key=value": devices whose twin tag `key` equals `value`
    QUERY = "query"  # selector "field=value and field=value ..." (see group_filter)


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    id: str
    name: str
    kind: GroupKind
    selector: str
    time_zone: str = "UTC"
    production: bool = False

    def __post_init__(self) -> None:
        _ident("group id", self.id)
        _ident("group name", self.name)
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        group_filter(self)  # raises ValueError on a selector that does not parse


_QUERY_FIELDS = ("hardware_id", "profile", "agent_version")
# The device-reported field (in `Device.reported`, the agent's own document) behind each
# narrowing field: when present, it must agree too.
REPORTED_FIELDS = {
    "hardware_id": "hardwareId",
    "profile": "profile",
    "agent_version": "agentVersion",
}


def group_filter(group: DeviceGroup) -> DeviceFilter:
    """The device filter that defines a group's (dynamic) membership.

    Tag groups: `"key=value"`. Query groups: clauses `field=value` joined by ` and `, where
    field is `hardware_id`, `profile`, `agent_version` or `tags.<key>`.

    Membership comes from operator-controlled data only: the `tags.<key>` clauses (twin tags,
    which only the hub's owner writes) make a device a member; `hardware_id`, `profile` and
    `agent_version` describe what the device is and reports, so they only narrow. A query
    group without a `tags.` clause has no members (`check_membership` refuses to store one).

    Raises:
        ValueError: the selector does not parse; the group cannot be stored.
    """
    clauses = [group.selector] if group.kind is GroupKind.TAG else group.selector.split(" and ")
    values: dict[str, str] = {}
    tags: dict[str, str] = {}
    for clause in clauses:
        key, sep, value = (part.strip() for part in clause.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"selector clause {clause!r} is not of the form key=value")
        if group.kind is GroupKind.TAG:
            tags[key] = value
        elif key.startswith("tags.") and len(key) > len("tags."):
            tags[key.removeprefix("tags.")] = value
        elif key in _QUERY_FIELDS:
            values[key] = value
        else:
            raise ValueError(
                f"unknown query field {key!r}; use {', '.join(_QUERY_FIELDS)} or tags.KEY"
            )
    return DeviceFilter(
        hardware_id=values.get("hardware_id"),
        profile=values.get("profile"),
        agent_version=values.get("agent_version"),
        tags=tags,
        membership=True,
    )


def check_membership(group: DeviceGroup) -> None:
    """Refuse a group whose selector names no operator-set tag (it would have no members).

    Raises:
        ValueError: a query group with only device-described fields.
    """
    if not group_filter(group).tags:
        raise ValueError(
            f"query {group.selector!r} needs a tags.KEY=VALUE clause: members are chosen by "
            "operator-set twin tags; hardware_id, profile and agent_version only narrow them"
        )


@dataclass(frozen=True, slots=True)
class Release:
    """Immutable once created."""

    id: str
    counter: int
    hardware_ids: tuple[str, ...]
    manifest: Mapping[str, Any]
    created_at: datetime
    created_by: str

    def __post_init__(self) -> None:
        _ident("release id", self.id)
        _non_negative("counter", self.counter)
        _aware("created_at", self.created_at)


@dataclass(frozen=True, slots=True)
class Rollout:
    """`revision` is the stored version; `save` bumps it and refuses a stale one."""

    id: str
    group_id: str
    release_id: str
    state: str
    created_at: datetime
    updated_at: datetime
    previous_release_id: str | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    state_data: Mapping[str, Any] = field(default_factory=dict)
    revision: int = 0

    def __post_init__(self) -> None:
        _ident("rollout id", self.id)
        _non_negative("revision", self.revision)
        _aware("created_at", self.created_at)
        _aware("updated_at", self.updated_at)


@dataclass(frozen=True, slots=True)
class RolloutStage:
    rollout_id: str
    index: int
    state: str
    planned: int = 0  # devices the stage targets, fixed when the stage starts
    started_at: datetime | None = None
    ended_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _non_negative("stage index", self.index)
        _non_negative("planned", self.planned)
        _aware("started_at", self.started_at)
        _aware("ended_at", self.ended_at)


@dataclass(frozen=True, slots=True)
class DeviceJob:
    """One device's job for one release in one rollout, keyed by (rollout, device, release):
    a rollback gives the device a second job, for the previous release, beside its forward one.
    `order_key` orders the offers within a stage (the engine stores the planner's hash there)."""

    rollout_id: str
    device_id: str
    stage: int
    state: str
    updated_at: datetime
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    offered_at: datetime | None = None
    release_id: str = field(kw_only=True)
    order_key: int = 0

    def __post_init__(self) -> None:
        _ident("release id", self.release_id)
        if not -(2**63) <= self.order_key < 2**63:
            raise ValueError(f"order_key must fit a signed 64-bit integer, got {self.order_key}")
        _non_negative("stage", self.stage)
        _non_negative("attempts", self.attempts)
        _aware("updated_at", self.updated_at)
        _aware("next_attempt_at", self.next_attempt_at)
        _aware("offered_at", self.offered_at)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A queued command. A message that failed has `attempts` and its `last_error`; while it
    backs off it waits until `next_attempt_at`; once parked (`parked_at`) it waits for an
    operator. A dropped message is parked and dispatched (it never ran)."""

    id: int
    kind: str
    payload: Mapping[str, Any]
    created_at: datetime
    dispatched_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    parked_at: datetime | None = None

    @property
    def state(self) -> str:
        """queued | retrying | parked | dispatched | dropped"""
        if self.dispatched_at is not None:
            return "dropped" if self.parked_at is not None else "dispatched"
        if self.parked_at is not None:
            return "parked"
        return "retrying" if self.attempts else "queued"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of `verify_chain`: `first_broken_seq` is None when every link holds."""

    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_broken_seq is None


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    RELEASE_SIGNER = "release-signer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What `tokens.create` returns: the stored record and the secret, shown only once."""

    token: ApiToken
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Lease:
    """`epoch` grows each time the lease changes hands: a fencing token for the leader."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
