"""The service runtime keeps what devices and operators rely on across restarts: the blob port
(named in every URL already offered) and the audit chain's head."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from service.blobs import BlobConfigError
from service.cli.main import app as cli_app
from service.config import Settings
from service.hubgateway import MemoryHubGateway
from service.runtime import BLOB_PORT_FILE, ServiceRuntime


def _settings(data: Path, **values: object) -> Settings:
    return Settings(data_dir=data, api_port=0, engine_interval=0.05, **values)  # type: ignore[arg-type]


def test_a_restart_keeps_the_first_chosen_blob_port(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    first = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        url = first.start().blob_url
    finally:
        first.stop()
    assert url is not None
    port = int((tmp_path / "data" / BLOB_PORT_FILE).read_text())
    assert url.startswith(f"http://127.0.0.1:{port}/")
    again = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        assert again.start().blob_url == url
    finally:
        again.stop()


def test_a_kept_port_taken_by_another_process_fails_clearly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        data.mkdir()
        (data / BLOB_PORT_FILE).write_text(f"{squatter.getsockname()[1]}\n")
        service = ServiceRuntime(_settings(data), hub=MemoryHubGateway())
        with pytest.raises(BlobConfigError, match=r"blob-port.*TINYFLEET_BLOB_PORT"):
            service.start()


@pytest.mark.parametrize(
    "content",
    ["abc", "0", "70000", "\u0668\u0660\u0668\u0660", "9" * 5000],
    ids=["not-a-number", "zero", "beyond-65535", "non-ascii-digits", "5000-digits"],
)
def test_a_damaged_port_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / BLOB_PORT_FILE).write_text(content)
    service = ServiceRuntime(_settings(data), hub=MemoryHubGateway())
    with pytest.raises(BlobConfigError, match="holds no port number"):
        service.start()


def test_a_configured_blob_port_is_used_and_not_kept(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = ServiceRuntime(_settings(tmp_path / "data", blob_port=port), hub=MemoryHubGateway())
    try:
        assert service.start().blob_url == f"http://127.0.0.1:{port}/blobs/"
    finally:
        service.stop()
    assert not (tmp_path / "data" / BLOB_PORT_FILE).exists()


def _append(service: ServiceRuntime, count: int) -> None:
    assert service.storage is not None
    for n in range(count):
        with service.storage.begin() as uow:
            uow.audit.append(
                at=service.clock(), actor="alice", action="group.put", subject=f"g{n}", details={}
            )


def _verify(api_url: str, token: str) -> dict[str, object]:
    response = httpx.get(
        f"{api_url}/api/v1/audit/verify", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _audit_verify(home: Path, api_url: str, token: str) -> Result:
    env = {
        "TINYFLEET_SERVER": None,
        "TINYFLEET_TOKEN": None,
        "TINYFLEET_PROFILE": None,
        "TINYFLEET_CONFIG": None,
        "XDG_CONFIG_HOME": str(home / "config"),
        "COLUMNS": "300",
    }
    argv = ["audit", "verify", "--server", f"{api_url}/api/v1", "--token", token]
    return CliRunner().invoke(cli_app, argv, env=env)


def _cut_newest(database: Path, count: int) -> None:
    """What someone with the database file (not the data dir) can do."""
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute(
            "DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) FROM audit_log) - ?", (count,)
        )


@pytest.mark.parametrize("cut", [1, 3], ids=["newest-entry", "newest-three"])
def test_deleting_the_newest_audit_entries_fails_verify(tmp_path: Path, cut: int) -> None:
    settings = _settings(tmp_path / "data")
    service = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        addresses = service.start()
        _append(service, 5)
        intact = _verify(addresses.api_url, addresses.admin_token)
        assert intact["ok"] is True and intact["checked"] == 6  # the bootstrap token + 5
        anchor = json.loads(settings.audit_anchor_path.read_text())
        assert anchor["seq"] == 6
        assert stat.S_IMODE(settings.audit_anchor_path.stat().st_mode) == 0o600
        _cut_newest(tmp_path / "data" / "tinyfleet.db", cut)
        broken = _verify(addresses.api_url, addresses.admin_token)
        assert broken["ok"] is False and broken["first_broken_seq"] == 7 - cut
        assert f"the newest {cut} entries were deleted" in str(broken["reason"])
        cli = _audit_verify(tmp_path, addresses.api_url, addresses.admin_token)
        assert cli.exit_code == 1, cli.output
        assert f"broken at seq {7 - cut}" in cli.stderr and "were deleted" in cli.stderr
        # A later append does not carry the anchor past the cut, nor hide it.
        _append(service, cut + 2)
        assert json.loads(settings.audit_anchor_path.read_text())["seq"] == 6
        regrown = _verify(addresses.api_url, addresses.admin_token)
        assert regrown["ok"] is False and regrown["first_broken_seq"] == 6
    finally:
        service.stop()
    again = ServiceRuntime(settings, hub=MemoryHubGateway())  # a restart does not forget it
    try:
        addresses = again.start()
        assert _verify(addresses.api_url, addresses.admin_token)["ok"] is False
    finally:
        again.stop()


def test_a_rolled_back_append_does_not_move_the_anchor(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    service = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        addresses = service.start()
        assert service.storage is not None
        with pytest.raises(RuntimeError), service.storage.begin() as uow:
            uow.audit.append(
                at=service.clock(), actor="alice", action="group.put", subject="g", details={}
            )
            raise RuntimeError("the change fails after its audit entry")
        assert json.loads(settings.audit_anchor_path.read_text())["seq"] == 1
        assert _verify(addresses.api_url, addresses.admin_token)["ok"] is True
    finally:
        service.stop()
