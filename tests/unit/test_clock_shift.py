"""`TINYFLEET_TEST_CLOCK_SHIFT` (what `make test-later` sets): every Python process the suite
starts moves its wall clock ahead, its monotonic clock (sleeps, timeouts) stays real, and TLS
stops checking certificate times that the kernel's clock would judge."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from datetime import timedelta

import pytest

from infra.clock_shift import ENV, parse_shift, wrap_command

PROBE = """
import json, ssl, time
from datetime import UTC, datetime
start = time.monotonic()
time.sleep(0.05)
print(json.dumps({
    "wall": time.time(), "now": datetime.now(UTC).timestamp(),
    "slept": time.monotonic() - start,
    "no_check_time": bool(ssl.create_default_context().verify_flags & 0x200000),
}))
"""


def _probe(shift: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if shift is not None:
        env[ENV] = shift
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400d", timedelta(days=400)),
        ("+400 days", timedelta(days=400)),
        ("12h", timedelta(hours=12)),
        ("3600", timedelta(hours=1)),
    ],
    ids=["days", "plus-days", "hours", "seconds"],
)
def test_shifts_parse(text: str, expected: timedelta) -> None:
    assert parse_shift(text) == expected


@pytest.mark.parametrize("text", ["-5d", "400 weeks", "soon", "1e9"], ids=str)
def test_a_bad_shift_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=ENV):
        parse_shift(text)


def test_a_child_process_runs_a_year_ahead_and_still_sleeps_in_real_time() -> None:
    if os.environ.get(ENV):
        pytest.skip("this test compares a shifted child with an unshifted one")
    plain, later = _probe(None), _probe("400d")
    ahead = timedelta(seconds=later["wall"] - plain["wall"])
    assert timedelta(days=399) < ahead < timedelta(days=401)
    assert abs(later["now"] - later["wall"]) < 5
    assert 0.04 < later["slept"] < 30  # a real sleep: neither skipped nor hung
    assert later["no_check_time"] and not plain["no_check_time"]


def test_node_children_are_wrapped_in_libfaketime_only_under_the_shift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert wrap_command(["node", "x.js"]) == ["node", "x.js"]
    monkeypatch.setenv(ENV, "1d")
    wrapped = wrap_command(["node", "x.js"])
    assert wrapped[-2:] == ["node", "x.js"]
    assert wrapped[:-2] in ([], [wrapped[0], "+86400 seconds"])


def test_this_process_default_context_checks_certificate_times_unless_shifted() -> None:
    checks = not ssl.create_default_context().verify_flags & 0x200000
    assert checks is not bool(os.environ.get(ENV))
