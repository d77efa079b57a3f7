"""Pure parts of the storage package: record validation, group selectors, URLs, the audit chain."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from service.storage import (
    AuditEntry,
    Device,
    DeviceFilter,
    DeviceGroup,
    GroupKind,
    Rollout,
    group_filter,
    normalize_url,
)
from service.storage._chain import GENESIS, entry_hash, hash_secret, new_secret, verify_entries

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NAIVE = datetime(2026, 11, 25, 12, 0)

BAD_RECORDS: list[tuple[str, Any, str]] = [
    ("naive-created-at", lambda: Device("d", "mt3620", NAIVE), "timezone-aware"),
    ("naive-last-seen", lambda: Device("d", "mt3620", T0, last_seen=NAIVE), "timezone-aware"),
    ("empty-device-id", lambda: Device("", "mt3620", T0), "device id"),
    ("overlong-device-id", lambda: Device("x" * 201, "mt3620", T0), "device id"),
    ("naive-filter-bound", lambda: DeviceFilter(last_seen_after=NAIVE), "timezone-aware"),
    (
        "unknown-time-zone",
        lambda: DeviceGroup("g", "G", GroupKind.TAG, "a=b", "Mars/Base"),
        "time zone",
    ),
    (
        "tag-selector-without-value",
        lambda: DeviceGroup("g", "G", GroupKind.TAG, "site="),
        "key=value",
    ),
    (
        "query-unknown-field",
        lambda: DeviceGroup("g", "G", GroupKind.QUERY, "os=linux"),
        "unknown query field",
    ),
    ("negative-revision", lambda: Rollout("r", "g", "rel", "draft", T0, T0, revision=-1), ">= 0"),
]


@pytest.mark.parametrize(
    ("build", "message"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS]
)
def test_invalid_records_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


SELECTORS = [
    (
        "tag",
        GroupKind.TAG,
        "ADUGroup=canary",
        DeviceFilter(tags={"ADUGroup": "canary"}, membership=True),
    ),
    (
        "tag-spaces",
        GroupKind.TAG,
        " site = oslo ",
        DeviceFilter(tags={"site": "oslo"}, membership=True),
    ),
    (
        "query",
        GroupKind.QUERY,
        "hardware_id=mt3620 and tags.ring=beta and agent_version=1.2",
        DeviceFilter(
            hardware_id="mt3620", agent_version="1.2", tags={"ring": "beta"}, membership=True
        ),
    ),
    (
        "query-without-tags-selects-nobody",
        GroupKind.QUERY,
        "hardware_id=mt3620",
        DeviceFilter(hardware_id="mt3620", membership=True),
    ),
]


@pytest.mark.parametrize(
    ("kind", "selector", "expected"), [s[1:] for s in SELECTORS], ids=[s[0] for s in SELECTORS]
)
def test_group_selectors(kind: GroupKind, selector: str, expected: DeviceFilter) -> None:
    assert group_filter(DeviceGroup("g", "G", kind, selector)) == expected


URLS = [
    ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////data/tinyfleet.db", "sqlite:////data/tinyfleet.db"),
]


@pytest.mark.parametrize(("url", "expected"), URLS, ids=[u[0].split(":")[0] for u in URLS])
def test_urls_are_normalised(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://h/db", "postgresql+asyncpg://h/db", "db.sqlite"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        normalize_url(url)


def _chain(count: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS
    for seq in range(1, count + 1):
        at = T0 + timedelta(seconds=seq)
        digest = entry_hash(seq, at, "alice", "act", f"s{seq}", {"n": seq}, prev)
        entries.append(AuditEntry(seq, at, "alice", "act", f"s{seq}", {"n": seq}, prev, digest))
        prev = digest
    return entries


def test_the_hash_does_not_depend_on_the_time_zone_the_time_is_written_in() -> None:
    oslo = T0.astimezone(timezone(timedelta(hours=1)))
    assert entry_hash(1, T0, "a", "b", "c", {}, GENESIS) == entry_hash(
        1, oslo, "a", "b", "c", {}, GENESIS
    )


def _swap(entries: list[AuditEntry]) -> list[AuditEntry]:
    return [entries[0], entries[2], entries[1], *entries[3:]]


CHAIN_ATTACKS: list[tuple[str, Any, int | None]] = [
    ("intact", lambda e: e, None),
    ("changed-details", lambda e: [*e[:2], replace(e[2], details={"n": 99}), *e[3:]], 3),
    ("changed-time", lambda e: [replace(e[0], at=T0), *e[1:]], 1),
    ("rehashed-entry", lambda e: [*e[:1], _rehashed(e[1]), *e[2:]], 3),
    ("removed-entry", lambda e: [e[0], *e[2:]], 2),
    ("reordered", _swap, 2),
    ("forged-genesis", lambda e: [replace(e[0], prev_hash="f" * 64), *e[1:]], 1),
]


def _rehashed(entry: AuditEntry) -> AuditEntry:
    """An attacker rewrites an entry and fixes its own hash: the next link breaks."""
    forged = replace(entry, actor="mallory")
    return replace(
        forged,
        hash=entry_hash(
            forged.seq,
            forged.at,
            forged.actor,
            forged.action,
            forged.subject,
            forged.details,
            forged.prev_hash,
        ),
    )


@pytest.mark.parametrize(
    ("attack", "first_broken"), [a[1:] for a in CHAIN_ATTACKS], ids=[a[0] for a in CHAIN_ATTACKS]
)
def test_verify_entries(attack: Any, first_broken: int | None) -> None:
    report = verify_entries(attack(_chain(5)))
    assert report.first_broken_seq == first_broken
    assert report.ok is (first_broken is None)


def test_token_secrets_are_random_and_hashed() -> None:
    (id_a, secret_a), (id_b, secret_b) = new_secret(), new_secret()
    assert id_a != id_b and secret_a != secret_b
    assert len(secret_a.removeprefix("tft_")) == 43  # 32 random bytes, base64url
    assert hash_secret(secret_a) != hash_secret(secret_b)
    assert len(hash_secret(secret_a)) == 64
