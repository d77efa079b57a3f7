"""A small, pure matcher for the classic 5-field cron syntax, on naive local wall-clock times.

    minute hour day-of-month month day-of-week        e.g.  "30 2 * * mon-fri"

Each field is a comma-separated list of `*`, `N`, `A-B`, with an optional `/STEP` after `*`,
`A-B` or `N` (`N/STEP` means `N-MAX/STEP`). Months accept `jan`..`dec`, weekdays `sun`..`sat`;
weekday 7 is Sunday like 0. The macros `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily`
(`@midnight`) and `@hourly` are accepted. `?`, `L`, `W`, `#` and seconds (Quartz) are refused.

Invariants:
- Parsing either returns a `CronExpression` whose five sets are non-empty subsets of the field's
  range, or raises `CronError` naming the field; the input is at most `MAX_EXPRESSION` chars.
- Day rule as in Vixie cron and cronie: when both day fields are restricted (neither starts with
  `*`), a day matches if *either* matches; otherwise both must match.
- Matching works on naive wall-clock datetimes; time zones and DST are the caller's concern
  (`service.domain.windows` resolves wall-clock starts to instants).
- `next_match` is exact (it never skips a matching minute) and bounded: it stops at `until`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from service.domain.errors import CronError

__all__ = ["MAX_EXPRESSION", "CronExpression"]

MAX_EXPRESSION = 200

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, lowest, highest, names whose index + offset is the value)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...], int], ...] = (
    ("minute", 0, 59, (), 0),
    ("hour", 0, 23, (), 0),
    ("day-of-month", 1, 31, (), 0),
    ("month", 1, 12, _MONTHS, 1),
    ("day-of-week", 0, 7, _DAYS, 0),
)


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...], base: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + base
    if not text.isdigit() or len(text) > 4:
        raise CronError(field, f"{text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(field, f"{value} is outside {low}-{high}")
    return value


def _parse_field(
    text: str, field: str, low: int, high: int, names: tuple[str, ...], base: int
) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(field, f"empty list item in {text!r}")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not 0 < int(step_text) <= high:
                raise CronError(field, f"step {step_text!r} must be a number from 1 to {high}")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first = _value(start, field, low, high, names, base)
            last = _value(end, field, low, high, names, base)
            if first > last:
                raise CronError(field, f"range {span!r} runs backwards")
        else:
            first = _value(span, field, low, high, names, base)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; build it with `CronExpression.parse`."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse `text`.

        Raises:
            CronError: the expression is malformed; its `field` names the part to fix.
        """
        if not isinstance(text, str) or not text.strip():
            raise CronError("expression", "a cron expression is required")
        if len(text) > MAX_EXPRESSION:
            raise CronError("expression", f"longer than {MAX_EXPRESSION} characters")
        source = _MACROS.get(text.strip().lower(), text)
        if source.strip().startswith("@"):
            raise CronError("expression", f"unknown macro {text.strip()!r}")
        parts = source.split()
        if len(parts) != len(_FIELDS):
            raise CronError(
                "expression", f"needs 5 fields (minute hour day month weekday), got {len(parts)}"
            )
        sets = [_parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[4])
        return cls(
            text=text.strip(),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            days_restricted=not parts[2].startswith("*"),
            weekdays_restricted=not parts[4].startswith("*"),
        )

    def day_matches(self, moment: datetime) -> bool:
        """Whether the date of `moment` passes the month and the two day fields."""
        if moment.month not in self.months:
            return False
        by_day = moment.day in self.days
        by_weekday = (moment.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday

    def matches(self, moment: datetime) -> bool:
        """Whether the wall-clock minute of `moment` (seconds ignored) is a firing time."""
        return (
            moment.minute in self.minutes and moment.hour in self.hours and self.day_matches(moment)
        )

    def next_match(self, start: datetime, until: datetime) -> datetime | None:
        """The first firing minute at or after `start` (rounded up to a minute) and before
        `until`, or None. Whole days and hours that cannot match are skipped."""
        moment = start.replace(second=0, microsecond=0)
        if moment < start:
            moment += timedelta(minutes=1)
        while moment < until:
            if not self.day_matches(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            elif moment.minute not in self.minutes:
                later = [m for m in self.minutes if m > moment.minute]
                if later:
                    moment = moment.replace(minute=min(later))
                else:
                    moment = moment.replace(minute=0) + timedelta(hours=1)
            else:
                return moment
        return None
