"""Maintenance windows: a cron expression for the start, a duration, an IANA time zone.

A window opens at each wall-clock minute its cron expression matches *in the group's time zone*
and stays open for `duration` of real (elapsed) time. All inputs and outputs are aware UTC
datetimes; the clock is a parameter.

DST rules (the tests pin each one):
- A start that falls in a spring-forward gap (02:30 on the day clocks jump 02:00 -> 03:00) opens
  at the instant that wall time names with the pre-transition offset, i.e. shifted later by the
  gap (03:30 new time): the night still gets its window, and it keeps its full duration.
- A start that occurs twice in a fall-back fold (01:30 on the day clocks go 02:00 -> 01:00)
  opens once, at its first occurrence (fold=0).
- Durations are elapsed time: a 2-hour window across a transition lasts 2 real hours.

Invariants:
- `is_open(now)` is True exactly when some start `s` satisfies `s <= now < s + duration`.
- `next_open(now)` returns `now` when open, else the earliest start after `now` within
  `HORIZON`, else None (an expression like "0 0 30 2 *" never fires).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.domain.cron import CronExpression
from service.domain.errors import SpecError

__all__ = ["HORIZON", "MAX_DURATION", "MaintenanceWindow", "next_opening", "window_open"]

MAX_DURATION = timedelta(hours=24)
HORIZON = timedelta(days=366 * 8)  # covers "29 February" in every leap-year pattern
_MARGIN = timedelta(hours=3)  # wider than any UTC offset change, so no local start is missed


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class MaintenanceWindow:
    """One recurring window; build it with `MaintenanceWindow.parse` to validate the input."""

    cron: CronExpression
    duration: timedelta
    zone: ZoneInfo

    @classmethod
    def parse(cls, cron: str, duration: timedelta, time_zone: str) -> MaintenanceWindow:
        """Validate and build a window.

        Raises:
            SpecError: bad cron (a `CronError`), a duration outside 1 minute..24 hours, or an
                unknown IANA zone name; the operator must correct the rollout spec.
        """
        expression = CronExpression.parse(cron)
        if not timedelta(minutes=1) <= duration <= MAX_DURATION:
            raise SpecError("window.duration", "must be between 1 minute and 24 hours")
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SpecError("window.time_zone", f"unknown IANA time zone {time_zone!r}") from exc
        return cls(expression, duration, zone)

    def starts(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Window starts (UTC instants) in `[start, end)`, in order, each once."""
        start, end = _aware(start, "start"), _aware(end, "end")
        local = start.astimezone(self.zone).replace(tzinfo=None) - _MARGIN
        local_end = end.astimezone(self.zone).replace(tzinfo=None) + _MARGIN
        seen: set[datetime] = set()
        while (wall := self.cron.next_match(local, local_end)) is not None:
            local = wall + timedelta(minutes=1)
            # fold=0: the first occurrence of an ambiguous time, the pre-gap offset in a gap
            instant = wall.replace(tzinfo=self.zone).astimezone(UTC)
            if start <= instant < end and instant not in seen:
                seen.add(instant)
                yield instant

    def is_open(self, now: datetime) -> bool:
        """Whether `now` lies inside one of this window's occurrences."""
        now = _aware(now, "now")
        return any(True for _ in self.starts(now - self.duration + _TICK, now + _TICK))

    def next_open(self, now: datetime) -> datetime | None:
        """`now` if open, else the next start within `HORIZON`, else None."""
        now = _aware(now, "now")
        if self.is_open(now):
            return now
        return next(iter(self.starts(now, now + HORIZON)), None)


_TICK = timedelta(microseconds=1)


def window_open(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    """True when there are no windows (no restriction) or any window is open at `now`."""
    return not windows or any(window.is_open(now) for window in windows)


def next_opening(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """When offering may next happen: `now` with no windows, else the earliest opening."""
    if not windows:
        return _aware(now, "now")
    candidates = [t for w in windows if (t := w.next_open(now)) is not None]
    return min(candidates, default=None)
