"""`tinyfleet devices` and `tinyfleet groups` against a running service."""

from __future__ import annotations

import json

from tests.integration.cli.conftest import DEVICES, Stack


def _json(stack: Stack, *args: str) -> object:
    result = stack.run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_devices_list_filters_and_pages(stack: Stack) -> None:
    devices = _json(stack, "devices", "list")
    assert [d["id"] for d in devices] == stack.device_ids
    assert {d["hardware_id"] for d in devices} == {"mt3620"}

    stack.hub.set_tags("dev-000", {"fleet": "lab"})
    assert _json(stack, "devices", "sync") == {"synced": DEVICES}
    lab = _json(stack, "devices", "list", "--tag", "fleet=lab")
    assert [d["id"] for d in lab] == ["dev-000"]
    assert _json(stack, "devices", "list", "--hardware", "nrf52") == []

    first_page = _json(stack, "devices", "list", "--limit", "2")
    every = _json(stack, "devices", "list", "--limit", "2", "--all")
    assert len(first_page) == 2
    assert [d["id"] for d in every] == stack.device_ids


def test_devices_table_and_show(stack: Stack) -> None:
    table = stack.run("devices", "list")
    assert table.exit_code == 0, table.output
    assert "dev-005" in table.stdout and "devices (6)" in table.stdout

    shown = _json(stack, "devices", "show", "dev-001")
    assert shown["id"] == "dev-001" and shown["tags"]["fleet"] == "demo"
    assert shown["jobs"] == []
    text = stack.run("devices", "show", "dev-001")
    assert text.exit_code == 0 and "fleet=demo" in text.stdout


def test_devices_bad_tag_is_a_usage_error(stack: Stack) -> None:
    result = stack.run("devices", "list", "--tag", "novalue")
    assert result.exit_code == 2
    assert "key=value" in result.stderr


def test_groups_put_show_members_list_delete(stack: Stack) -> None:
    group = _json(stack, "groups", "put", "grp-1", "--name", "Demo", "--tag", "fleet=demo")
    assert group == {
        "id": "grp-1",
        "name": "Demo",
        "kind": "tag",
        "selector": "fleet=demo",
        "time_zone": "UTC",
        "production": False,
        "members": DEVICES,
    }
    query = _json(
        stack,
        "groups",
        "put",
        "grp-q",
        "--query",
        "hardware_id=mt3620 and tags.fleet=demo",
        "--tz",
        "Europe/Paris",
        "--production",
    )
    assert query["kind"] == "query" and query["production"] and query["time_zone"] == "Europe/Paris"

    assert _json(stack, "groups", "show", "grp-1")["members"] == DEVICES
    members = _json(stack, "groups", "members", "grp-1", "--limit", "4", "--all")
    assert [d["id"] for d in members] == stack.device_ids
    assert sorted(g["id"] for g in _json(stack, "groups", "list")) == ["grp-1", "grp-q"]

    listed = stack.run("groups", "list")
    assert listed.exit_code == 0 and "Europe/Paris" in listed.stdout

    assert _json(stack, "groups", "delete", "grp-q") == {"deleted": "grp-q"}
    assert [g["id"] for g in _json(stack, "groups", "list")] == ["grp-1"]


def test_groups_put_needs_exactly_one_selector(stack: Stack) -> None:
    neither = stack.run("groups", "put", "grp-x")
    both = stack.run("groups", "put", "grp-x", "--tag", "a=b", "--query", "a=b")
    assert neither.exit_code == 2 and both.exit_code == 2
    assert "exactly one" in neither.stderr


def test_groups_refused_selector_shows_the_server_detail(stack: Stack) -> None:
    result = stack.run("groups", "put", "grp-x", "--query", "nonsense")
    assert result.exit_code == 1, result.output
    assert "422" in result.stderr
