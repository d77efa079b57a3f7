"""Run the whole local stack with its wall clock moved ahead: `TINYFLEET_TEST_CLOCK_SHIFT=400d`.

The suite must pass on any date. Moving the machine's clock is the honest check, but libfaketime
breaks Python 3.11's `time.sleep` (it calls `clock_nanosleep` on an absolute monotonic deadline,
which libfaketime either fakes into a hang or turns into EINVAL when told to leave the monotonic
clock alone). So the shift is applied inside every Python process instead: `make setup` drops a
`.pth` line into each virtual environment that calls `install()` when the variable is set, and
`install()` moves `time.time`, `datetime.now` and their kin (time-machine, ticking) while the
monotonic clock, which sleeps and timeouts use, stays real. Child processes inherit the variable
and shift themselves on start, so the service, the hub, the devices and the cores all agree.

Two things cannot be moved from inside Python and are handled here:
- OpenSSL checks certificate validity against the kernel's clock, so certificates issued on the
  shifted clock would look "not yet valid". Under the shift, TLS contexts skip that one check
  (X509_V_FLAG_NO_CHECK_TIME); chain, hostname and key checks stay on.
- Node (Azurite) is not Python: `wrap_command` prefixes it with libfaketime, which Node tolerates.

Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import sysconfig
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["ENV", "install", "install_hook", "parse_shift", "shift", "wrap_command"]

ENV = "TINYFLEET_TEST_CLOCK_SHIFT"
_NO_CHECK_TIME = 0x200000  # OpenSSL's X509_V_FLAG_NO_CHECK_TIME
_UNITS = {"d": 86_400, "day": 86_400, "days": 86_400, "h": 3_600, "hours": 3_600, "s": 1, "": 1}
_SHIFT = re.compile(r"\+?\s*(\d{1,6})\s*([a-z]*)")
_installed: list[object] = []


def parse_shift(text: str) -> timedelta:
    """`400d`, `+400 days`, `12h`, `3600` (seconds): how far ahead; raises ValueError."""
    match = _SHIFT.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{ENV}={text!r}: give a count of days, hours or seconds, e.g. 400d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def shift() -> timedelta:
    """The shift this process runs with (zero when the variable is unset)."""
    text = os.environ.get(ENV, "")
    return parse_shift(text) if text else timedelta(0)


def install() -> None:
    """Move this process's wall clock ahead by `shift()`; idempotent, a no-op at zero."""
    ahead = shift()
    if not ahead or _installed:
        return
    import time_machine  # a test dependency: only imported when the shift is asked for

    traveller = time_machine.travel(datetime.now(UTC) + ahead, tick=True)
    traveller.start()
    _installed.append(traveller)
    original_init = ssl.SSLContext.__init__

    def _init(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        original_init(self)
        self.verify_flags |= _NO_CHECK_TIME  # type: ignore[assignment]

    ssl.SSLContext.__init__ = _init  # type: ignore[method-assign]


def wrap_command(command: list[str]) -> list[str]:
    """Prefix a non-Python child (Node) with libfaketime under the shift, so it agrees."""
    ahead = shift()
    faketime = shutil.which("faketime")
    if not ahead or faketime is None:
        return command
    return [faketime, f"+{int(ahead.total_seconds())} seconds", *command]


def install_hook() -> Path:
    """Write the `.pth` line that calls `install()` at every start of this interpreter's venv
    (`make setup` runs this in each virtual environment the tests use)."""
    root = Path(__file__).resolve().parents[1]
    line = (
        f"import os, sys; os.environ.get({ENV!r}) and (sys.path.append({str(root)!r}) or "
        "__import__('infra.clock_shift', fromlist=['install']).install())\n"
    )
    target = Path(sysconfig.get_paths()["purelib"]) / "tinyfleet_clock_shift.pth"
    target.write_text(line)
    return target


if __name__ == "__main__":
    print(f"clock-shift hook: {install_hook()}")
