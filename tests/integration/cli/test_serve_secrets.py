"""`tinyfleet serve` keeps its secrets out of captured output and out of `ps`: the bootstrap admin
token is printed only on a terminal, the hub key can come from a file or the environment, and a
key given on the command line is warned about."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.cli.serve import KEY_IN_ARGV, show_admin_token

ENTRY = [sys.executable, "-c", "from service.cli.main import main; main()"]
KEY = "c2VjcmV0LWtleS1vZi10aGUtaHViLXBvbGljeS0wMTIzNDU2Nzg5"
HUB = f"HostName=localhost:9;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
DEADLINE_S = 120.0


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TINYFLEET_DATA_DIR": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "COLUMNS": "200",
        "TINYFLEET_MODE": "dev",
    }
    for name in ("TINYFLEET_SERVER", "TINYFLEET_TOKEN", "TINYFLEET_HUB_CONNECTION_STRING"):
        env.pop(name, None)
    return env


class Served:
    """`serve` as a child process with captured (not terminal) stdout and stderr."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [*ENTRY, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("ready"):
                break
        assert self.lines and self.lines[-1].startswith("ready"), self.stop()

    @property
    def api(self) -> str:
        return next(line.split()[2] for line in self.lines if line.startswith("tinyfleet API"))

    def stop(self) -> str:
        """Stops the service; returns its stderr."""
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


@pytest.fixture
def started() -> Iterator[list[Served]]:
    services: list[Served] = []
    yield services
    for service in services:
        if service.process.poll() is None:
            service.stop()


def test_the_admin_token_is_not_in_captured_output_and_the_hub_key_comes_from_a_file(
    tmp_path: Path, started: list[Served]
) -> None:
    hub_file = tmp_path / "hub-connection"
    hub_file.write_text(HUB + "\n")
    hub_file.chmod(0o600)
    service = Served(_env(tmp_path), "--hub-file", str(hub_file))
    started.append(service)
    secret = (tmp_path / "data" / "admin-token").read_text().strip()
    output = "".join(service.lines)
    assert secret not in output
    assert f"admin token in  {tmp_path / 'data' / 'admin-token'}" in output
    cmdline = Path(f"/proc/{service.process.pid}/cmdline").read_bytes()
    assert KEY.encode() not in cmdline
    health = httpx.get(f"{service.api}/health").json()
    assert health["hub"] is True  # the gateway was built from the file's connection string
    err = service.stop()
    assert secret not in err and KEY not in err
    assert "readable by other users" not in err


def test_a_hub_file_others_can_read_is_warned_about(tmp_path: Path, started: list[Served]) -> None:
    hub_file = tmp_path / "hub-connection"
    hub_file.write_text(HUB)
    hub_file.chmod(0o644)
    service = Served(_env(tmp_path), "--hub-file", str(hub_file))
    started.append(service)
    assert "readable by other users; chmod 600 it" in service.stop()


def test_a_key_on_the_command_line_is_warned_about(tmp_path: Path, started: list[Served]) -> None:
    service = Served(_env(tmp_path), "--hub", HUB)
    started.append(service)
    assert KEY_IN_ARGV in service.stop().replace("\n", " ")


def test_the_environment_variable_needs_no_argument(tmp_path: Path, started: list[Served]) -> None:
    env = {**_env(tmp_path), "TINYFLEET_HUB_CONNECTION_STRING": HUB}
    service = Served(env)
    started.append(service)
    assert httpx.get(f"{service.api}/health").json()["hub"] is True
    assert "SharedAccessKey" not in service.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hub", HUB, "--hub-file", "x"], "not both"),
        (["--hub-file", "/nonexistent/hub"], "cannot read --hub-file"),
    ],
    ids=["both", "missing-file"],
)
def test_bad_hub_options_are_refused_before_start(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [*ENTRY, "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()


def test_serve_shows_the_new_token_once_on_a_terminal(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [*ENTRY, "serve", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
        env=_env(tmp_path),
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + DEADLINE_S
        while b"ready" not in seen:
            assert time.monotonic() < deadline and process.poll() is None, seen
            if select.select([primary], [], [], 0.1)[0]:
                try:
                    seen += os.read(primary, 4096)
                except OSError:
                    break
        secret = (tmp_path / "data" / "admin-token").read_text().strip()
        assert secret.encode() in seen and b"(shown once)" in seen
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(primary)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("created", "dev_mode", "shown"),
    [(True, True, True), (False, True, False), (True, False, False)],
    ids=["new-in-dev", "reused", "production"],
)
def test_the_token_is_shown_only_when_new_in_dev_mode(
    monkeypatch: pytest.MonkeyPatch, created: bool, dev_mode: bool, shown: bool
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    show_admin_token("tft_secret", created, Path("/data/admin-token"), dev_mode=dev_mode)
    assert ("tft_secret" in terminal.getvalue()) is shown
    assert "admin token in  /data/admin-token" in terminal.getvalue()
