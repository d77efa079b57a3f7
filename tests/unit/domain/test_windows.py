"""Maintenance windows in a group's IANA time zone, with the DST rules pinned row by row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.errors import CronError, SpecError
from service.domain.windows import MaintenanceWindow, next_opening, window_open


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _window(cron: str, minutes: int, zone: str) -> MaintenanceWindow:
    return MaintenanceWindow.parse(cron, timedelta(minutes=minutes), zone)


# (cron, minutes, zone, instant, open?) -- Berlin: CET = UTC+1, CEST = UTC+2;
# 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
# New York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
ROWS = [
    ("plain-day-opens", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 28, 1, 30), True),
    ("plain-day-before", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 28, 1, 29), False),
    ("plain-day-end-exclusive", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 28, 2, 30), False),
    # 02:30 does not exist on 2026-03-29: opens at 03:30 CEST = 01:30 UTC, for the full hour
    ("gap-start-shifted-opens", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 29, 1, 30), True),
    ("gap-start-not-early", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 29, 1, 29), False),
    ("gap-full-duration", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 29, 2, 29), True),
    ("gap-closes", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 29, 2, 30), False),
    ("after-gap-summer-time", "30 2 * * *", 60, "Europe/Berlin", _utc(2026, 3, 30, 0, 30), True),
    # 02:30 happens twice on 2026-10-25: the window opens once, at the first (CEST) occurrence
    ("fold-first-occurrence", "30 2 * * *", 30, "Europe/Berlin", _utc(2026, 10, 25, 0, 30), True),
    ("fold-no-second-window", "30 2 * * *", 30, "Europe/Berlin", _utc(2026, 10, 25, 1, 30), False),
    # durations are elapsed time: 01:00 CET + 3 h = 03:00 UTC although clocks jumped
    ("elapsed-across-gap", "0 1 * * *", 180, "Europe/Berlin", _utc(2026, 3, 29, 2, 59), True),
    ("elapsed-across-gap-ends", "0 1 * * *", 180, "Europe/Berlin", _utc(2026, 3, 29, 3, 0), False),
    ("ny-gap-start", "30 2 * * *", 30, "America/New_York", _utc(2026, 3, 8, 7, 30), True),
    ("ny-fold-first", "30 1 * * *", 30, "America/New_York", _utc(2026, 11, 1, 5, 30), True),
    ("ny-fold-second", "30 1 * * *", 30, "America/New_York", _utc(2026, 11, 1, 6, 30), False),
    ("weekday-window", "0 9 * * mon-fri", 480, "America/New_York", _utc(2026, 11, 27, 20), True),
    ("weekend-closed", "0 9 * * mon-fri", 480, "America/New_York", _utc(2026, 11, 28, 15), False),
    # a window that opened yesterday evening is still open after local midnight
    ("spans-midnight", "0 23 * * *", 120, "Asia/Tokyo", _utc(2026, 6, 1, 15, 30), True),
    ("half-hour-zone", "0 0 * * *", 30, "Asia/Kolkata", _utc(2026, 6, 1, 18, 45), True),
]


@pytest.mark.parametrize(
    ("cron", "minutes", "zone", "instant", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_is_open(cron: str, minutes: int, zone: str, instant: datetime, expected: bool) -> None:
    assert _window(cron, minutes, zone).is_open(instant) is expected


def test_next_open_over_a_weekend() -> None:
    window = _window("0 9 * * mon-fri", 480, "America/New_York")
    friday_evening = _utc(2026, 11, 27, 23)  # 18:00 EST
    assert window.next_open(friday_evening) == _utc(2026, 11, 30, 14)  # Monday 09:00 EST


def test_next_open_is_now_when_open() -> None:
    window = _window("0 9 * * *", 60, "UTC")
    assert window.next_open(_utc(2026, 1, 1, 9, 10)) == _utc(2026, 1, 1, 9, 10)


def test_next_open_of_an_impossible_date_is_none() -> None:
    assert _window("0 0 31 2 *", 60, "UTC").next_open(_utc(2026, 1, 1)) is None


def test_leap_day_window_is_found_years_ahead() -> None:
    assert _window("0 0 29 2 *", 60, "UTC").next_open(_utc(2026, 3, 1)) == _utc(2028, 2, 29)


def test_no_windows_means_always_open() -> None:
    now = _utc(2026, 1, 1)
    assert window_open((), now)
    assert next_opening((), now) == now


def test_several_windows_take_the_earliest() -> None:
    windows = (_window("0 20 * * *", 60, "UTC"), _window("0 8 * * *", 60, "UTC"))
    assert not window_open(windows, _utc(2026, 1, 1, 7))
    assert next_opening(windows, _utc(2026, 1, 1, 7)) == _utc(2026, 1, 1, 8)
    assert window_open(windows, _utc(2026, 1, 1, 20, 30))


@pytest.mark.parametrize(
    ("cron", "minutes", "zone", "error", "field"),
    [
        ("0 2 * * *", 0, "UTC", SpecError, "window.duration"),
        ("0 2 * * *", 24 * 60 + 1, "UTC", SpecError, "window.duration"),
        ("0 2 * * *", 60, "Mars/Olympus_Mons", SpecError, "window.time_zone"),
        ("0 2 * * *", 60, "../../etc/passwd", SpecError, "window.time_zone"),
        ("0 25 * * *", 60, "UTC", CronError, "hour"),
    ],
    ids=["zero-duration", "over-a-day", "unknown-zone", "path-as-zone", "bad-cron"],
)
def test_refusals(cron: str, minutes: int, zone: str, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as caught:
        _window(cron, minutes, zone)
    assert isinstance(caught.value, SpecError) and caught.value.field == field


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        _window("0 2 * * *", 60, "UTC").is_open(datetime(2026, 1, 1))


_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
_CRONS = st.sampled_from(["30 2 * * *", "0 */6 * * *", "15 1 * * sun", "0 0 1 * *", "*/20 2 * * *"])


@settings(max_examples=40, deadline=None)
@given(
    cron=_CRONS,
    zone=_ZONES,
    minutes=st.integers(1, 24 * 60),
    now=st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)),
    probe=st.floats(0, 1),
)
def test_next_open_is_consistent_with_is_open(
    cron: str, zone: str, minutes: int, now: datetime, probe: float
) -> None:
    window = _window(cron, minutes, zone)
    opening = window.next_open(now)
    assert opening is not None
    assert window.is_open(opening)
    assert (opening == now) is window.is_open(now)
    # nothing is open strictly between now and the opening
    between = now + (opening - now) * probe
    if between < opening:
        assert not window.is_open(between)
