"""`tinyfleet hub device add` (the `hub run` command is driven in test_restart.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from infra.hub import BackgroundHub, HubConfig
from infra.hub._store import HubStore
from service.cli.hub import app
from tests.integration.hub.conftest import rest

runner = CliRunner()


def test_device_add_prints_an_azure_connection_string(tmp_path: Path) -> None:
    result = runner.invoke(app, ["device", "add", "dev1", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    fields = dict(part.split("=", 1) for part in out["connection_string"].split(";"))
    assert fields["HostName"] == "tinyfleet-hub.local" and fields["DeviceId"] == "dev1"
    assert fields["GatewayHostName"] == "localhost" and len(fields["SharedAccessKey"]) == 44
    store = HubStore(HubConfig(data_dir=tmp_path).db_path)
    assert store.devices["dev1"].primary_key == fields["SharedAccessKey"]
    store.close()


def test_device_add_x509_issues_a_certificate_and_registers_its_thumbprint(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["device", "add", "cam1", "--x509", "--data", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert Path(out["cert_path"]).exists() and Path(out["key_path"]).stat().st_mode & 0o077 == 0
    assert "x509=true" in out["connection_string"]
    store = HubStore(HubConfig(data_dir=tmp_path).db_path)
    assert store.devices["cam1"].thumbprints() == {out["thumbprint"]}
    store.close()


def test_device_add_uses_the_host_name_of_a_hub_that_ran_here(tmp_path: Path) -> None:
    (tmp_path / "hub.json").write_text(json.dumps({"hostname": "fleet.example"}))
    result = runner.invoke(app, ["device", "add", "dev1", "--data", str(tmp_path), "--json"])
    assert json.loads(result.output)["connection_string"].startswith("HostName=fleet.example;")


def test_errors_are_clear_and_non_zero(tmp_path: Path) -> None:
    runner.invoke(app, ["device", "add", "dev1", "--data", str(tmp_path)])
    duplicate = runner.invoke(app, ["device", "add", "dev1", "--data", str(tmp_path)])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    bad_id = runner.invoke(app, ["device", "add", "dev/1", "--data", str(tmp_path)])
    assert bad_id.exit_code == 1 and "device id" in bad_id.output
    no_dot = runner.invoke(app, ["run", "--data", str(tmp_path), "--hostname", "nodot"])
    assert no_dot.exit_code == 1 and "dot" in no_dot.output


def test_a_running_hub_sees_devices_the_cli_adds(hub: BackgroundHub) -> None:
    data = str(hub.server.config.data_dir)
    assert runner.invoke(app, ["device", "add", "late1", "--data", data]).exit_code == 0
    listed = rest(hub, "GET", "/devices").json()
    assert [d["deviceId"] for d in listed] == ["late1"]
    query = rest(hub, "POST", "/devices/query", json={"query": "SELECT * FROM devices"})
    assert [t["deviceId"] for t in query.json()] == ["late1"]
