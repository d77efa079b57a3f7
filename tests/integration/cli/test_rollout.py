"""`tinyfleet rollout` against a running service whose engine is driven by the test."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli.conftest import DEVICES, Stack

FINAL = {"completed", "aborted", "rolled_back"}


def _ok(stack: Stack, *args: str) -> Any:
    result = stack.run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _create(stack: Stack, rollout_id: str = "ro-1", *extra: str) -> dict[str, Any]:
    _ok(stack, "groups", "put", "grp-1", "--tag", "fleet=demo")
    rollout: dict[str, Any] = _ok(
        stack,
        "rollout",
        "create",
        rollout_id,
        "--release",
        "rel-1",
        "--group",
        "grp-1",
        "--previous",
        "rel-0",
        "--stage",
        "canary:2:2m",
        "--stage",
        "rest:100%:2m",
        *extra,
    )
    return rollout


def test_create_sends_the_whole_spec(stack: Stack, tmp_path: Path) -> None:
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"min_devices": 1}))
    rollout = _create(
        stack,
        "ro-1",
        "--threshold",
        "90",
        "--advance",
        "approval",
        "--failure-threshold",
        "25",
        "--failure-min-devices",
        "2",
        "--failure-action",
        "rollback",
        "--in-progress-timeout",
        "30m",
        "--max-retries",
        "1",
        "--rate",
        "10",
        "--rate-max",
        "50",
        "--window",
        "0 2 * * *;2h",
        "--start-at",
        "2026-12-01T03:00:00+01:00",
    )
    assert rollout["state"] == "draft" and rollout["previous_release_id"] == "rel-0"
    assert [(s["name"], s["planned"]) for s in rollout["stages"]] == [
        ("canary", 2),
        ("rest", DEVICES - 2),
    ]
    spec = rollout["spec"]
    text = json.dumps(spec)
    for figure in ("90", "approval", "rollback", "1800", "0 2 * * *", "2026-12-01T02:00:00"):
        assert figure in text, (figure, spec)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stage", "canary"], "name:PERCENT%:SOAK"),
        (["--stage", "canary:ten:5m"], "not a percent"),
        (["--stage", "canary:10%:5 minutes"], "not a duration"),
        (["--stage", "a:1", "--window", "0 2 * * *"], "CRON;DURATION"),
        (["--stage", "a:1", "--start-at", "tomorrow"], "not an ISO 8601 time"),
        (["--stage", "a:1", "--in-progress-timeout", "soon"], "not a duration"),
    ],
    ids=["no-size", "bad-size", "bad-soak", "bad-window", "bad-start", "bad-timeout"],
)
def test_create_refuses_bad_options_locally(stack: Stack, extra: list[str], message: str) -> None:
    result = stack.run("rollout", "create", "ro-1", "--release", "rel-1", "--group", "g", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_create_refused_by_the_server_is_exit_1(stack: Stack) -> None:
    result = stack.run(
        "rollout", "create", "ro-1", "--release", "rel-1", "--group", "nope", "--stage", "a:1:0"
    )
    assert result.exit_code == 1, result.output
    assert "404" in result.stderr and "nope" in result.stderr
    _ok(stack, "groups", "put", "grp-1", "--tag", "fleet=demo")
    invalid = stack.run(
        "rollout", "create", "ro-1", "--release", "rel-1", "--group", "grp-1", "--stage", "a:200%"
    )
    assert invalid.exit_code == 1, invalid.output
    assert "422" in invalid.stderr and "stages[0].percent" in invalid.stderr


def test_resume_a_draft_is_refused_with_the_servers_detail(stack: Stack) -> None:
    _create(stack)
    result = stack.run("rollout", "resume", "ro-1")
    assert result.exit_code == 1, result.output
    assert "409" in result.stderr and "conflict" in result.stderr
    assert "draft" in result.stderr  # the detail names the state
    in_use = stack.run("groups", "delete", "grp-1")
    assert in_use.exit_code == 1, in_use.output
    assert "409" in in_use.stderr and "used by a rollout" in in_use.stderr


def test_commands_list_show_and_jobs(stack: Stack) -> None:
    _create(stack)
    started = _ok(stack, "rollout", "start", "ro-1")
    assert started["state"] == "running"
    paused = _ok(stack, "rollout", "pause", "ro-1", "--reason", "coffee")
    assert paused["state"] == "paused"
    assert _ok(stack, "rollout", "resume", "ro-1")["state"] == "running"

    listed = _ok(stack, "rollout", "list", "--group", "grp-1")
    assert [r["id"] for r in listed] == ["ro-1"]
    assert _ok(stack, "rollout", "list", "--state", "completed") == []
    shown = _ok(stack, "rollout", "show", "ro-1")
    assert shown["group_id"] == "grp-1"
    jobs = _ok(stack, "rollout", "jobs", "ro-1", "--limit", "2", "--all")
    assert sorted(j["device_id"] for j in jobs) == stack.device_ids

    for args in (("rollout", "list"), ("rollout", "show", "ro-1"), ("rollout", "jobs", "ro-1")):
        table = stack.run(*args)
        assert table.exit_code == 0, table.output
        assert "ro-1" in table.stdout

    aborted = _ok(stack, "rollout", "abort", "ro-1", "--reason", "enough")
    assert aborted["state"] == "aborted"
    audit = _ok(stack, "audit", "list")
    actions = [e["action"] for e in audit if e["subject"] == "ro-1"]
    assert actions == [
        "rollout.create",
        "rollout.start",
        "rollout.pause",
        "rollout.resume",
        "rollout.abort",
    ]


def test_status_snapshot(stack: Stack) -> None:
    _create(stack)
    _ok(stack, "rollout", "start", "ro-1")
    stack.step()
    snapshot = _ok(stack, "rollout", "status", "ro-1")
    assert snapshot["id"] == "ro-1" and snapshot["state"] == "running"
    assert [s["name"] for s in snapshot["stages"]] == ["canary", "rest"]
    assert snapshot["stages"][0]["planned"] == 2
    table = stack.run("rollout", "status", "ro-1")
    assert table.exit_code == 0, table.output
    assert "canary" in table.stdout and "rest" in table.stdout and "running" in table.stdout


def _drive_until_final(stack: Stack, stop: threading.Event) -> None:
    for _ in range(200):
        if stop.is_set():
            return
        stack.step()
        with stack.storage.begin(readonly=True) as uow:
            if uow.rollouts.get("ro-1").state in FINAL:
                return
        stop.wait(0.02)


@pytest.mark.parametrize("as_json", [False, True], ids=["live", "json-lines"])
def test_status_watch_ends_when_the_rollout_completes(stack: Stack, as_json: bool) -> None:
    _create(stack, "ro-1", "--no-gate")  # no telemetry here: the default gate would wait
    _ok(stack, "rollout", "start", "ro-1")
    stop = threading.Event()
    driver = threading.Thread(target=_drive_until_final, args=(stack, stop), daemon=True)
    driver.start()
    try:
        args = ["rollout", "status", "ro-1", "--watch", "--interval", "0.05"]
        result = stack.run(*args, *(["--json"] if as_json else []))
    finally:
        stop.set()
        driver.join(timeout=30)
    assert result.exit_code == 0, result.output
    if as_json:
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines[-1]["state"] == "completed"
        assert lines[-1]["totals"]["confirmed"] == DEVICES
        assert len(lines) >= 2  # it saw the rollout before it completed
        confirmed = [line["totals"]["confirmed"] for line in lines]
        assert confirmed == sorted(confirmed)
    else:
        assert "rollout ro-1 completed" in result.stdout
        assert f"{DEVICES - 2}/{DEVICES - 2}" in result.stdout


def test_status_watch_ends_when_the_rollout_aborts(stack: Stack) -> None:
    stack.fleet.bad = set(stack.device_ids)  # every device refuses the release
    _create(stack, "ro-1", "--failure-threshold", "20", "--failure-action", "abort")
    _ok(stack, "rollout", "start", "ro-1")
    stop = threading.Event()
    driver = threading.Thread(target=_drive_until_final, args=(stack, stop), daemon=True)
    driver.start()
    try:
        result = stack.run("rollout", "status", "ro-1", "--watch", "--interval", "0.05", "--json")
    finally:
        stop.set()
        driver.join(timeout=30)
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["state"] == "aborted"
    assert last["totals"]["failed"] >= 1 and last["totals"]["confirmed"] == 0
