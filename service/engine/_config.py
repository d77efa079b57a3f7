"""The engine's configuration: one typed object with hard limits, built at the entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from signing.device_ids import device_segment

__all__ = ["EngineConfig"]

MAX_BATCH = 10_000


@dataclass(frozen=True)
class EngineConfig:
    """Where devices fetch metadata from, and how the engine leads and batches.

    `director_url` may contain `{device_id}`: each device has its own director repository.
    """

    image_url: str
    director_url: str
    targets_url: str
    holder: str = "engine"
    lease_name: str = "rollout-engine"
    lease_ttl: timedelta = timedelta(seconds=30)
    report_batch: int = 500  # twins read per hub query batch
    dispatch_batch: int = 100  # outbox messages claimed per dispatcher round
    joiner_scan: int = 5_000  # devices checked for a missing job, per rollout and tick
    query: str = ""  # the blob store's signed grant, appended by devices to every fetch
    # A device's own grant (image repository and its director folder), when the store signs one.
    device_query: Callable[[str], str] | None = field(default=None, compare=False, repr=False)
    # A failing outbox message is retried after dispatch_backoff, doubling up to
    # dispatch_backoff_max, and parked after dispatch_max_attempts failures.
    dispatch_max_attempts: int = 8
    dispatch_backoff: timedelta = timedelta(seconds=5)
    dispatch_backoff_max: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in ("image_url", "director_url", "targets_url"):
            if not getattr(self, name).startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http(s) URL")
        if not timedelta(seconds=1) <= self.lease_ttl <= timedelta(minutes=10):
            raise ValueError("lease_ttl must be 1 second..10 minutes")
        if not all(
            1 <= size <= MAX_BATCH
            for size in (self.report_batch, self.dispatch_batch, self.joiner_scan)
        ):
            raise ValueError(f"batch sizes must be 1..{MAX_BATCH}")
        if not 1 <= self.dispatch_max_attempts <= 100:
            raise ValueError("dispatch_max_attempts must be 1..100")
        if (
            not timedelta(0)
            < self.dispatch_backoff
            <= self.dispatch_backoff_max
            <= timedelta(days=1)
        ):
            raise ValueError("dispatch back-off must be 0 < backoff <= backoff_max <= 1 day")
        if not self.holder or not self.lease_name:
            raise ValueError("holder and lease_name must be non-empty")

    def retry_delay(self, attempts: int) -> timedelta:
        """How long a message that failed `attempts` times waits before its next attempt."""
        delay: timedelta = self.dispatch_backoff * 2 ** min(max(attempts, 1) - 1, 30)
        return min(delay, self.dispatch_backoff_max)

    def query_for(self, device_id: str) -> str:
        """The grant `device_id` appends to its fetches (`query` if there is no per-device one)."""
        return self.device_query(device_id) if self.device_query is not None else self.query

    def director_url_for(self, device_id: str) -> str:
        """The director URL of `device_id`: its id as a safe path segment (`device_segment`)."""
        return self.director_url.replace("{device_id}", device_segment(device_id))
