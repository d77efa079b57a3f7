"""The SDK adapter turns credential, rights and transport failures into the gateway's family."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.hub import BackgroundHub, HubConfig, service_connection_string
from service.hubgateway import HubConfigError, HubUnavailable, SdkHubGateway
from tests.integration.hub.conftest import HOSTNAME


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackgroundHub]:
    config = HubConfig(data_dir=tmp_path / "hub", hostname=HOSTNAME, mqtt_port=0, https_port=0)
    with BackgroundHub(config) as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.server.ca_cert))
        yield running


def test_a_wrong_key_is_a_configuration_error(hub: BackgroundHub) -> None:
    wrong = base64.b64encode(b"not the key, not the key, not it").decode()
    gateway = SdkHubGateway.from_connection_string(
        service_connection_string(hub.server.https_port, "iothubowner", wrong)
    )
    with pytest.raises(HubConfigError):
        gateway.get_twin("dev-1")


def test_a_policy_without_registry_rights_is_a_configuration_error(hub: BackgroundHub) -> None:
    key = hub.core.policies["service"][0]
    gateway = SdkHubGateway.from_connection_string(
        service_connection_string(hub.server.https_port, "service", key)
    )
    with pytest.raises(HubConfigError):
        gateway.register_device("dev-1")


def test_a_malformed_connection_string_is_a_configuration_error() -> None:
    with pytest.raises(HubConfigError):
        SdkHubGateway.from_connection_string("HostName=only")


def test_an_unreachable_hub_is_unavailable(hub: BackgroundHub) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    info = json.loads((hub.server.config.data_dir / "hub.json").read_text())
    text = info["service_connection_string"].replace(str(hub.server.https_port), str(closed_port))
    gateway = SdkHubGateway.from_connection_string(text, retries=0)
    with pytest.raises(HubUnavailable):
        list(gateway.iter_twins())
