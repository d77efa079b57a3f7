"""The validated types every user-given value of the API goes through, so hostile input is a 422
problem at the edge and never an error deeper down (a database overflow, a RecursionError, a
forged log or terminal line).

Invariants:
- A name or id (path parameter or body field) holds no character of Unicode category C (control,
  format such as bidi overrides, surrogate, private use, unassigned): it reaches logs, the audit
  log and the CLI's terminal as it is.
- A sequence number fits a signed 64-bit integer (both SQL backends store them so).
- A time is timezone-aware and stays inside the calendar once converted to UTC (0001-01-01 with
  a positive offset does not); it is handed on in UTC.
- A free-form JSON object is at most `MAX_JSON_DEPTH` containers deep, holds at most
  `MAX_JSON_NODES` values and no NUL in any string (PostgreSQL's JSONB refuses \u0000); it is
  checked iteratively (a check must not recurse either).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field

__all__ = [
    "INT64_MAX",
    "MAX_JSON_DEPTH",
    "MAX_JSON_NODES",
    "AwareTime",
    "JsonObject",
    "Name",
    "Text",
    "check_json",
    "check_name",
    "check_seq_cursor",
    "control_characters",
]

INT64_MAX = 2**63 - 1
MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 10_000


def control_characters(text: str, *, allow: str = "") -> list[str]:
    """The characters of `text` in Unicode category C (less those in `allow`), as repr'd."""
    return [
        f"U+{ord(c):04X}"
        for c in text
        if c not in allow and unicodedata.category(c).startswith("C")
    ]


def check_name(value: str) -> str:
    if found := control_characters(value):
        raise ValueError(f"must not contain control or format characters ({', '.join(found[:5])})")
    return value


def _check_text(value: str) -> str:
    if found := control_characters(value, allow="\n\t"):
        raise ValueError(f"must not contain control or format characters ({', '.join(found[:5])})")
    return value


def _check_time(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (end with Z or an offset such as +01:00)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the calendar once converted to UTC") from None


def check_json(value: Any, *, where: str = "value") -> Any:
    """`value` if it is within the depth and size limits; ValueError otherwise."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise ValueError(f"{where} holds more than {MAX_JSON_NODES} values")
        if isinstance(item, str) and "\x00" in item:
            raise ValueError(f"{where} holds a NUL character (\\u0000)")
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def check_seq_cursor(value: str) -> int:
    """A decimal cursor of ASCII digits within 64 bits, as an int; ValueError otherwise."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > INT64_MAX:
        raise ValueError("must be a previous next_after (a decimal number)")
    return int(value)


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_name)]
"""A user-given name or id: no control or format characters."""

Text = Annotated[str, AfterValidator(_check_text)]
"""Free text (a description, a reason): newlines and tabs allowed, no other control characters."""

AwareTime = Annotated[datetime, AfterValidator(_check_time)]
"""A timezone-aware time inside the calendar, in UTC."""

JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
"""A free-form JSON object within the depth and size limits."""
