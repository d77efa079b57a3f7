"""The 5-field cron matcher: parsing, refusals, the day rule, `next_match` against brute force."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.cron import CronExpression
from service.domain.errors import CronError, SpecError


@pytest.mark.parametrize(
    ("text", "moment", "expected"),
    [
        ("* * * * *", datetime(2026, 1, 1, 0, 0), True),
        ("30 2 * * *", datetime(2026, 3, 8, 2, 30), True),
        ("30 2 * * *", datetime(2026, 3, 8, 2, 31), False),
        ("*/15 * * * *", datetime(2026, 3, 8, 4, 45), True),
        ("*/15 * * * *", datetime(2026, 3, 8, 4, 50), False),
        ("0 9-17/4 * * *", datetime(2026, 3, 8, 13, 0), True),
        ("0 9-17/4 * * *", datetime(2026, 3, 8, 15, 0), False),
        ("5/20 * * * *", datetime(2026, 3, 8, 1, 45), True),
        ("0 0 * * mon-fri", datetime(2026, 11, 27, 0, 0), True),  # a Friday
        ("0 0 * * mon-fri", datetime(2026, 11, 28, 0, 0), False),  # a Saturday
        ("0 0 * * 7", datetime(2026, 11, 29, 0, 0), True),  # 7 is Sunday too
        ("0 0 * * SUN", datetime(2026, 11, 29, 0, 0), True),
        ("0 0 1 jan,jul *", datetime(2026, 7, 1, 0, 0), True),
        ("0 0 1 jan,jul *", datetime(2026, 8, 1, 0, 0), False),
        # both day fields restricted: either matches (Vixie cron)
        ("0 0 13 * fri", datetime(2026, 11, 13, 0, 0), True),  # the 13th, a Friday
        ("0 0 13 * fri", datetime(2026, 11, 20, 0, 0), True),  # a Friday, not the 13th
        ("0 0 13 * fri", datetime(2026, 10, 13, 0, 0), True),  # the 13th, a Tuesday
        ("0 0 13 * fri", datetime(2026, 11, 19, 0, 0), False),
        # one field starting with '*': both must match
        ("0 0 */2 * fri", datetime(2026, 11, 20, 0, 0), False),  # Friday but an even day
        ("0 0 */2 * fri", datetime(2026, 11, 27, 0, 0), True),  # Friday and an odd day
        ("0 0 29 2 *", datetime(2028, 2, 29, 0, 0), True),
        ("@daily", datetime(2026, 5, 5, 0, 0), True),
        ("@hourly", datetime(2026, 5, 5, 7, 0), True),
        ("@weekly", datetime(2026, 11, 29, 0, 0), True),
    ],
    ids=lambda value: str(value),
)
def test_matches(text: str, moment: datetime, expected: bool) -> None:
    assert CronExpression.parse(text).matches(moment) is expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "expression"),
        ("* * * *", "expression"),
        ("* * * * * *", "expression"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/0 * * * *", "minute"),
        ("5-1 * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("? * * * *", "minute"),
        ("* * L * *", "day-of-month"),
        ("* * * * 5#3", "day-of-week"),
        ("* * * foo *", "month"),
        ("-1 * * * *", "minute"),
        ("@reboot", "expression"),
        ("0 0 " + "1," * 100 + "1 * *", "expression"),
    ],
    ids=[
        "empty",
        "four-fields",
        "six-fields-quartz-seconds",
        "minute-60",
        "hour-24",
        "day-0",
        "day-32",
        "month-13",
        "weekday-8",
        "step-0",
        "backwards-range",
        "empty-list-item",
        "quartz-question-mark",
        "quartz-last-day",
        "quartz-nth-weekday",
        "unknown-name",
        "negative",
        "unknown-macro",
        "too-long",
    ],
)
def test_refusals_name_the_field(text: str, field: str) -> None:
    with pytest.raises(CronError) as caught:
        CronExpression.parse(text)
    assert caught.value.field == field
    assert isinstance(caught.value, SpecError)


def _brute_next(expression: CronExpression, start: datetime, until: datetime) -> datetime | None:
    moment = start
    while moment < until:
        if expression.matches(moment):
            return moment
        moment += timedelta(minutes=1)
    return None


_FIELD = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 30), st.integers(30, 59), st.integers(1, 20)).map(
        lambda t: f"{t[0]}-{t[1]}/{t[2]}"
    ),
    st.integers(1, 30).map(lambda step: f"*/{step}"),
)


@st.composite
def _expressions(draw: st.DrawFn) -> str:
    minute = draw(_FIELD)
    hour = draw(st.sampled_from(["*", "3", "0-6", "*/5", "22,23"]))
    day = draw(st.sampled_from(["*", "1", "15-20", "*/3", "31"]))
    month = draw(st.sampled_from(["*", "2", "jan-mar", "*/4"]))
    weekday = draw(st.sampled_from(["*", "0", "mon-fri", "6,0", "3"]))
    return f"{minute} {hour} {day} {month} {weekday}"


@settings(max_examples=60, deadline=None)
@given(
    text=_expressions(),
    start=st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31)),
)
def test_next_match_equals_brute_force(text: str, start: datetime) -> None:
    expression = CronExpression.parse(text)
    start = start.replace(second=0, microsecond=0)
    until = start + timedelta(days=3)
    assert expression.next_match(start, until) == _brute_next(expression, start, until)


def test_next_match_rounds_up_to_the_next_minute() -> None:
    expression = CronExpression.parse("* * * * *")
    found = expression.next_match(datetime(2026, 1, 1, 0, 0, 30), datetime(2026, 1, 2))
    assert found == datetime(2026, 1, 1, 0, 1)


def test_next_match_stops_at_until_for_an_impossible_date() -> None:
    expression = CronExpression.parse("0 0 30 2 *")
    assert expression.next_match(datetime(2026, 1, 1), datetime(2040, 1, 1)) is None
