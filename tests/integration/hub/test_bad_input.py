"""Bad bytes on real sockets: refused or disconnected, never a crash, never another device."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.hub import BackgroundHub, HubConfig, HubLimits
from infra.hub import _codec as mqtt
from tests.integration.hub.conftest import HOSTNAME, rest


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[BackgroundHub]:
    """Overrides the package's hub (and so `devices`) with short handshake and CONNECT limits."""
    limits = HubLimits(tls_handshake_timeout_s=0.5, connect_timeout_s=0.5)
    config = HubConfig(
        data_dir=tmp_path / "hub", hostname=HOSTNAME, mqtt_port=0, https_port=0, limits=limits
    )
    with BackgroundHub(config) as running:
        yield running


def _closed_within(sock: socket.socket | ssl.SSLSocket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    return True


def _tls(hub: BackgroundHub) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(hub.server.ca_cert))
    raw = socket.create_connection(("127.0.0.1", hub.server.mqtt_port))
    return context.wrap_socket(raw, server_hostname="localhost")


def test_plain_mqtt_without_tls_is_dropped(hub: BackgroundHub) -> None:
    with socket.create_connection(("127.0.0.1", hub.server.mqtt_port)) as sock:
        sock.sendall(mqtt.encode(mqtt.Connect("dev1", 60, True)))
        assert _closed_within(sock, 5)


def test_a_stalled_handshake_and_a_missing_connect_time_out(hub: BackgroundHub) -> None:
    with socket.create_connection(("127.0.0.1", hub.server.mqtt_port)) as stalled:
        assert _closed_within(stalled, 5)
    with _tls(hub) as silent:
        started = time.monotonic()
        assert _closed_within(silent, 5)
        assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,
        b"\x10\xff\xff\xff\xff\x7f",
        mqtt.encode(mqtt.Connect("dev1", 60, True))[:-3] + b"\xc3\x28\x00",
        b"\x30" + bytes([0x80, 0x80, 0x40]) + b"x" * 100,
    ],
    ids=["junk", "huge-remaining-length", "invalid-utf8-client-id", "oversized-publish"],
)
def test_malformed_mqtt_over_tls_is_disconnected_and_spares_others(
    hub: BackgroundHub, devices: Any, garbage: bytes
) -> None:
    bystander = devices("bystander")
    bystander.subscribe("$iothub/twin/res/#")
    with _tls(hub) as attacker:
        attacker.sendall(garbage)
        assert _closed_within(attacker, 5)
    bystander.publish("$iothub/twin/GET/?$rid=1", b"")
    assert bystander.expect("$iothub/twin/res/200").payload
    assert not bystander.disconnected.is_set()


def test_rest_refuses_bad_json_and_huge_bodies(hub: BackgroundHub) -> None:
    rest(hub, "PUT", "/devices/dev1", json={})
    bad = rest(
        hub,
        "PATCH",
        "/twins/dev1",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and "ArgumentInvalid" in bad.json()["Message"]
    huge = rest(hub, "PATCH", "/twins/dev1", content=b"{" + b" " * (600 * 1024) + b"}")
    assert huge.status_code == 413
    too_big = {"properties": {"desired": {f"k{i}": "x" * 4000 for i in range(9)}}}
    assert rest(hub, "PATCH", "/twins/dev1", json=too_big).status_code == 400
    assert rest(hub, "GET", "/twins/dev1").json()["version"] == 1
