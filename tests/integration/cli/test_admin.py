"""`tinyfleet tokens` and `tinyfleet audit`, and the exit codes of auth failures."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time

import sqlalchemy as sa

from service.storage import Role
from tests.integration.cli.conftest import Stack


def test_tokens_create_list_revoke(stack: Stack) -> None:
    created = stack.run("tokens", "create", "ci", "--role", "operator", "--json")
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    assert issued["name"] == "ci" and issued["role"] == "operator" and issued["secret"]

    # The new token works for what its role allows...
    listed = stack.run("groups", "list", "--json", token=issued["secret"])
    assert listed.exit_code == 0, listed.output
    tokens = json.loads(stack.run("tokens", "list", "--json").stdout)
    assert {t["name"] for t in tokens} == {"root", "ci"}
    assert all("secret" not in t for t in tokens)

    table = stack.run("tokens", "list")
    assert table.exit_code == 0 and "operator" in table.stdout

    revoked = stack.run("tokens", "revoke", issued["id"], "--json")
    assert revoked.exit_code == 0 and json.loads(revoked.stdout) == {"revoked": issued["id"]}
    # ...and nothing once revoked.
    after = stack.run("groups", "list", token=issued["secret"])
    assert after.exit_code == 4, after.output
    assert "401" in after.stderr


def test_tokens_create_shows_the_secret_only_on_a_terminal(stack: Stack) -> None:
    names = {t["name"] for t in json.loads(stack.run("tokens", "list", "--json").stdout)}
    captured = stack.run("tokens", "create", "viewer-1", "--role", "viewer")
    assert captured.exit_code == 2, captured.output  # refused before a token is made
    assert "--secret-file" in captured.stderr
    after = {t["name"] for t in json.loads(stack.run("tokens", "list", "--json").stdout)}
    assert after == names

    path = stack.home / "viewer.secret"
    filed = stack.run(
        "tokens", "create", "viewer-1", "--role", "viewer", "--secret-file", str(path)
    )
    assert filed.exit_code == 0, filed.output
    secret = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and secret not in filed.output
    assert stack.run("groups", "list", token=secret).exit_code == 0
    again = stack.run("tokens", "create", "v2", "--role", "viewer", "--secret-file", str(path))
    assert again.exit_code == 2 and "new file" in again.stderr  # never overwrites a secret

    primary, secondary = pty.openpty()
    argv = ["tokens", "create", "viewer-2", "--role", "viewer", "--server", stack.url]
    env = {k: v for k, v in {**os.environ, **stack.env()}.items() if v is not None}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli.main import main; main()",
            *argv,
            "--token",
            stack.admin,
        ],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([primary], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break  # the terminal closed: the command is done
            if not chunk:
                break
            seen += chunk
    finally:
        assert process.wait(timeout=60) == 0, seen
        os.close(primary)
    assert b"shown once" in seen and b"tft_" in seen


def test_role_too_low_is_exit_4_with_the_servers_detail(stack: Stack) -> None:
    viewer = stack.token("watcher", Role.VIEWER)
    result = stack.run("groups", "put", "grp-1", "--tag", "fleet=demo", token=viewer)
    assert result.exit_code == 4, result.output
    assert "403" in result.stderr and "watcher" in result.stderr
    assert "role is too low" in result.stderr


def test_unknown_token_is_exit_4(stack: Stack) -> None:
    result = stack.run("devices", "list", token="not-a-token")
    assert result.exit_code == 4, result.output
    assert "401" in result.stderr and "unauthorized" in result.stderr


def test_no_token_at_all_is_exit_4(stack: Stack) -> None:
    result = stack.bare("devices", "list", "--server", stack.url)
    assert result.exit_code == 4, result.output
    assert "no token" in result.stderr  # the hint says where the CLI looked


def test_audit_list_and_verify(stack: Stack) -> None:
    assert stack.run("groups", "put", "grp-1", "--tag", "fleet=demo").exit_code == 0
    assert stack.run("groups", "delete", "grp-1").exit_code == 0
    entries = json.loads(stack.run("audit", "list", "--json").stdout)
    assert [(e["actor"], e["action"], e["subject"]) for e in entries][-2:] == [
        ("root", "group.put", "grp-1"),
        ("root", "group.delete", "grp-1"),
    ]
    paged = json.loads(stack.run("audit", "list", "--limit", "1", "--all", "--json").stdout)
    assert paged == entries
    later = json.loads(
        stack.run("audit", "list", "--after-seq", str(entries[-1]["seq"]), "--json").stdout
    )
    assert later == []

    table = stack.run("audit", "list")
    assert table.exit_code == 0 and "group.delete" in table.stdout

    verified = stack.run("audit", "verify", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["checked"] == len(entries)
    assert "intact" in stack.run("audit", "verify").stdout


def test_audit_verify_exits_1_when_the_chain_is_broken(stack: Stack) -> None:
    assert stack.run("groups", "put", "grp-1", "--tag", "fleet=demo").exit_code == 0
    assert stack.run("groups", "put", "grp-2", "--tag", "fleet=lab").exit_code == 0
    with stack.storage.engine.begin() as conn:  # an attacker with the database file
        conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1"))
    result = stack.run("audit", "verify")
    assert result.exit_code == 1, result.output
    assert "broken at seq 1" in result.stderr
    as_json = stack.run("audit", "verify", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["first_broken_seq"] == 1
