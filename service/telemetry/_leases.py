"""Partition leases: ingest workers share a feed's partitions through the service database.

Each partition has one lease row (migration 0009): its owner (a worker id, or none), when the
lease expires (the owners' injected clock, in ms) and an epoch, the fencing token, incremented
on every claim. Workers also keep a heartbeat row, so that one that holds nothing yet counts.

A worker calls `PartitionLeases.balance` every `ttl / 3`. In one transaction that first locks
every lease row (in partition order), it renews its heartbeat, works out the live workers
(those holding an unexpired lease or an unexpired heartbeat, itself included) and its fair
share (`fair_share`: partitions / live workers, the remainder going to the lowest ids), renews
the leases it keeps, gives up those beyond its share (rebalance) and claims free or expired
ones up to it. On a clean stop `release` frees its leases and drops its heartbeat.

Invariants:
- At most one worker commits a partition's events under a given epoch: the ingest commit
  (`check_fence`, in the commit's own transaction) locks the batch's lease rows and refuses the
  whole commit with `LeaseLostError` unless each names this worker and the epoch it claimed.
- A claim and a commit of one partition are serialized by that row lock, so a new owner reads
  the committed position after the old owner's last accepted commit, never before it; it
  resumes there, and nothing is lost or counted twice (without help from the seen set).
- An expired lease that nobody claimed is still its owner's: renewing it keeps the epoch, which
  is safe because no one else could commit under it in between.
- Rows are always locked in partition order, so balances and commits cannot deadlock.
- Time is the injected clock's; nothing here reads the wall clock.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.storage._schema import METADATA
from service.telemetry._errors import LeaseLostError, SourceConfigError

__all__ = [
    "DEFAULT_LEASE_TTL",
    "Fence",
    "Lease",
    "LeaseChange",
    "LeaseConfig",
    "LeasePlan",
    "PartitionLeases",
    "check_fence",
    "fair_share",
    "plan_leases",
]

DEFAULT_LEASE_TTL = timedelta(seconds=30)
MIN_TTL, MAX_TTL = timedelta(seconds=1), timedelta(hours=1)

leases = sa.Table(
    "telemetry_ingest_leases",
    METADATA,
    sa.Column("partition", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=True),  # None: free
    sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),  # the fencing token
)

heartbeats = sa.Table(
    "telemetry_ingest_workers",
    METADATA,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("expires_ms", sa.BigInteger(), nullable=False),
)


def default_worker_id() -> str:
    """Unique per process and start: a restarted worker is a new worker."""
    return f"{socket.gethostname()[:120]}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseConfig:
    """Lease mode of an `IngestWorker`: its id and how long a lease lasts unrenewed."""

    ttl: timedelta = DEFAULT_LEASE_TTL
    worker_id: str = field(default_factory=default_worker_id)

    def __post_init__(self) -> None:
        if not MIN_TTL <= self.ttl <= MAX_TTL:
            raise SourceConfigError(f"lease ttl must be in [{MIN_TTL}, {MAX_TTL}], not {self.ttl}")
        if not 1 <= len(self.worker_id) <= 200 or not self.worker_id.isprintable():
            raise SourceConfigError("a worker id is 1 to 200 printable characters")


# -- the pure part --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str | None
    expires_ms: int
    epoch: int

    def live(self, now_ms: int) -> bool:
        return self.owner is not None and self.expires_ms > now_ms


@dataclass(frozen=True, slots=True)
class LeasePlan:
    share: int
    live: tuple[str, ...]
    keep: tuple[str, ...]  # held and renewed
    claim: tuple[str, ...]  # free or expired: taken over (epoch + 1)
    release: tuple[str, ...]  # held beyond the share: given up


def fair_share(partitions: int, live: Collection[str], me: str) -> int:
    """This worker's share: an equal split, the remainder to the lowest ids (sums to the total)."""
    ordered = sorted(set(live) | {me})
    base, extra = divmod(partitions, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def plan_leases(
    rows: Mapping[str, Lease], workers: Mapping[str, int], me: str, now_ms: int
) -> LeasePlan:
    """What `me` keeps, claims and gives up, given every lease row and heartbeat (expiry ms)."""
    live = {r.owner for r in rows.values() if r.owner is not None and r.live(now_ms)}
    live |= {w for w, expires in workers.items() if expires > now_ms} | {me}
    share = fair_share(len(rows), live, me)
    mine = sorted(p for p, r in rows.items() if r.owner == me)
    free = [p for p in sorted(rows) if rows[p].owner != me and not rows[p].live(now_ms)]
    keep = mine[:share]
    return LeasePlan(
        share=share,
        live=tuple(sorted(live)),
        keep=tuple(keep),
        claim=tuple(free[: max(0, share - len(keep))]),
        release=tuple(mine[share:]),
    )


# -- fencing --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fence:
    """What a commit asserts: `owner` holds each partition's lease under its epoch."""

    owner: str
    epochs: Mapping[str, int]


def _locked(conn: sa.Connection, partitions: Collection[str] | None) -> dict[str, Lease]:
    query = sa.select(leases).order_by(leases.c.partition).with_for_update()
    if partitions is not None:
        query = query.where(leases.c.partition.in_(sorted(partitions)))
    return {
        r.partition: Lease(r.owner, int(r.expires_ms), int(r.epoch)) for r in conn.execute(query)
    }


def check_fence(conn: sa.Connection, fence: Fence, partitions: Collection[str]) -> None:
    """In the commit's transaction: lock the partitions' lease rows and raise `LeaseLostError`
    naming those this worker no longer holds under the fenced epoch (the expiry does not
    matter: only a claim, which moves the epoch, lets another worker commit)."""
    rows = _locked(conn, partitions)
    lost = [
        p
        for p in sorted(partitions)
        if p not in fence.epochs
        or p not in rows
        or (rows[p].owner, rows[p].epoch) != (fence.owner, fence.epochs[p])
    ]
    if lost:
        held = {p: (rows[p].owner, rows[p].epoch) if p in rows else None for p in lost}
        raise LeaseLostError(lost, f"{fence.owner} at {dict(fence.epochs)}; the leases say {held}")


# -- the driver -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseChange:
    gained: tuple[str, ...] = ()  # newly held: seek them to their committed positions
    lost: tuple[str, ...] = ()  # taken by another worker
    released: tuple[str, ...] = ()  # given up to rebalance
    share: int = 0
    live: tuple[str, ...] = ()


def _upsert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (both have ON CONFLICT, with the same spelling)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class PartitionLeases:
    """One worker's leases over `partitions`, kept in the database behind `unit` (a write
    transaction on the telemetry store's engine)."""

    def __init__(
        self,
        unit: Callable[[], AbstractContextManager[sa.Connection]],
        partitions: Sequence[str],
        config: LeaseConfig,
        clock: Callable[[], datetime],
    ) -> None:
        if not partitions:
            raise SourceConfigError("leases need at least one partition")
        self._unit = unit
        self._partitions = sorted(partitions)
        self.config = config
        self._clock = clock
        self.held: dict[str, int] = {}  # partition -> the epoch this worker claimed it under
        self._next_ms: int | None = None

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def _now_ms(self) -> int:
        return int(self._clock().timestamp() * 1000)

    def due(self) -> bool:
        """Time to renew (and rebalance): every ttl / 3, and at once when never balanced."""
        return self._next_ms is None or self._now_ms() >= self._next_ms

    def fence(self, partitions: Collection[str]) -> Fence:
        return Fence(self.worker_id, {p: self.held[p] for p in partitions if p in self.held})

    def forget(self, fence: Fence, partitions: Collection[str]) -> None:
        """Drop partitions a commit was refused on, unless this worker claimed them anew since."""
        for p in partitions:
            if p in fence.epochs and self.held.get(p) == fence.epochs[p]:
                del self.held[p]

    def balance(self) -> LeaseChange:
        """Renew, rebalance, claim (see the module docstring); returns what changed."""
        now_ms = self._now_ms()
        ttl_ms = int(self.config.ttl.total_seconds() * 1000)
        me = self.worker_id
        with self._unit() as conn:
            rows = _locked(conn, self._partitions)
            missing = [p for p in self._partitions if p not in rows]
            if missing:
                conn.execute(
                    _upsert(conn, leases)
                    .values(
                        [
                            {"partition": p, "owner": None, "expires_ms": 0, "epoch": 0}
                            for p in missing
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["partition"])
                )
                rows = _locked(conn, self._partitions)
            beat = _upsert(conn, heartbeats).values(worker_id=me, expires_ms=now_ms + ttl_ms)
            conn.execute(
                beat.on_conflict_do_update(
                    index_elements=["worker_id"], set_={"expires_ms": beat.excluded.expires_ms}
                )
            )
            conn.execute(heartbeats.delete().where(heartbeats.c.expires_ms <= now_ms - ttl_ms))
            workers = {
                w: int(e)
                for w, e in conn.execute(sa.select(heartbeats.c.worker_id, heartbeats.c.expires_ms))
            }
            plan = plan_leases(rows, workers, me, now_ms)
            c = leases.c
            if plan.keep:
                conn.execute(
                    leases.update()
                    .where(c.partition.in_(plan.keep), c.owner == me)
                    .values(expires_ms=now_ms + ttl_ms)
                )
            if plan.release:
                conn.execute(
                    leases.update()
                    .where(c.partition.in_(plan.release), c.owner == me)
                    .values(owner=None, expires_ms=0)
                )
            claimed: dict[str, int] = {}
            for p in plan.claim:
                epoch = rows[p].epoch + 1
                done = conn.execute(
                    leases.update()
                    .where(c.partition == p, c.epoch == rows[p].epoch)
                    .values(owner=me, epoch=epoch, expires_ms=now_ms + ttl_ms)
                )
                if done.rowcount == 1:
                    claimed[p] = epoch
        now_held = {p: rows[p].epoch for p in plan.keep} | claimed
        before = self.held
        self.held = now_held
        self._next_ms = now_ms + ttl_ms // 3
        return LeaseChange(
            gained=tuple(p for p in sorted(now_held) if before.get(p) != now_held[p]),
            lost=tuple(
                p for p in sorted(before) if p not in plan.release and now_held.get(p) != before[p]
            ),
            released=plan.release,
            share=plan.share,
            live=plan.live,
        )

    def release(self) -> None:
        """Clean stop: free this worker's leases and drop its heartbeat."""
        me = self.worker_id
        with self._unit() as conn:
            _locked(conn, self._partitions)
            conn.execute(
                leases.update().where(leases.c.owner == me).values(owner=None, expires_ms=0)
            )
            conn.execute(heartbeats.delete().where(heartbeats.c.worker_id == me))
        self.held = {}
        self._next_ms = None
