"""The CLI against `tinyfleet serve` in its own process, as an operator on the service's machine
uses it: no --server, no --token; the bootstrap admin token is read from DATA/admin-token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ENTRY = [sys.executable, "-c", "from service.cli.main import main; main()"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path / "data"
    env = {
        **os.environ,
        "TINYFLEET_DATA_DIR": str(data),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "COLUMNS": "200",
    }
    for name in ("TINYFLEET_SERVER", "TINYFLEET_TOKEN", "TINYFLEET_PROFILE", "TINYFLEET_CONFIG"):
        env.pop(name, None)
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [*ENTRY, "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    api = ""
    lines = []
    for line in process.stdout:  # the service prints its addresses, then "ready"
        lines.append(line)
        if line.startswith("tinyfleet API"):
            api = line.split()[2]
        if line.startswith("ready"):
            break
    try:
        assert api, f"serve did not start: {lines} {(tmp_path / 'serve.log').read_text()}"
        yield api, env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENTRY, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_operator_on_the_service_machine_needs_no_setup(
    served: tuple[str, dict[str, str]],
) -> None:
    api, env = served
    env = {**env, "TINYFLEET_SERVER": api}  # ".../api/v1", as `serve` prints it

    created = _cli(env, "tokens", "create", "ci", "--role", "viewer", "--json")
    assert created.returncode == 0, created.stderr
    viewer = json.loads(created.stdout)["secret"]

    listed = _cli(env, "tokens", "list", "--json")
    assert {t["name"] for t in json.loads(listed.stdout)} == {"admin", "ci"}

    denied = _cli(env, "groups", "put", "g", "--tag", "a=b", "--token", viewer)
    assert denied.returncode == 4, denied.stderr

    verified = _cli(env, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    no_engine = _cli(env, "rollout", "start", "ro-1")  # served without a hub: no engine
    assert no_engine.returncode == 1, no_engine.stderr
    assert "503" in no_engine.stderr or "404" in no_engine.stderr
