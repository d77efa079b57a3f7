"""The unmodified `azure-iot-hub` 2.7 SDK (IoTHubRegistryManager) against the REST surface."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from infra.hub import BackgroundHub, make_sas_token, service_connection_string
from tests.integration.hub.conftest import rest


@pytest.fixture
def registry(
    hub: BackgroundHub, monkeypatch: pytest.MonkeyPatch
) -> Iterator[IoTHubRegistryManager]:
    # msrest honours REQUESTS_CA_BUNDLE: the way to trust the mock CA without touching the SDK.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.server.ca_cert))
    info = json.loads((hub.server.config.data_dir / "hub.json").read_text())
    yield IoTHubRegistryManager.from_connection_string(info["service_connection_string"])


def _manager(hub: BackgroundHub, policy: str) -> IoTHubRegistryManager:
    key = hub.core.policies[policy][0]
    return IoTHubRegistryManager.from_connection_string(
        service_connection_string(hub.server.https_port, policy, key)
    )


def test_registry_lifecycle_with_sas_and_x509(registry: IoTHubRegistryManager) -> None:
    created = registry.create_device_with_sas("dev1", None, None, "enabled")
    assert created.device_id == "dev1" and created.authentication.type == "sas"
    assert created.authentication.symmetric_key.primary_key  # the hub generated the keys
    with pytest.raises(HttpOperationError) as exists:
        registry.create_device_with_sas("dev1", None, None, "enabled")
    assert exists.value.response.status_code == 409
    thumb = "AB" * 20
    cam = registry.create_device_with_x509("cam1", thumb, None, "enabled")
    assert cam.authentication.type == "selfSigned"
    assert cam.authentication.x509_thumbprint.primary_thumbprint == thumb
    updated = registry.update_device_with_sas("dev1", created.etag, None, None, "disabled")
    assert updated.status == "disabled" and updated.etag != created.etag
    with pytest.raises(HttpOperationError) as stale:
        registry.update_device_with_sas("dev1", created.etag, None, None, "enabled")
    assert stale.value.response.status_code == 412
    assert {d.device_id for d in registry.get_devices()} == {"dev1", "cam1"}
    registry.delete_device("dev1")
    with pytest.raises(HttpOperationError) as gone:
        registry.get_device("dev1")
    assert gone.value.response.status_code == 404


def test_twins_with_etags_patch_and_replace(registry: IoTHubRegistryManager) -> None:
    registry.create_device_with_sas("dev1", None, None, "enabled")
    twin = registry.get_twin("dev1")
    assert twin.etag == "AAAAAAAAAAE=" and twin.version == 1
    patched = registry.update_twin(
        "dev1",
        Twin(tags={"site": "north"}, properties=TwinProperties(desired={"interval": 5})),
        twin.etag,
    )
    assert patched.tags == {"site": "north"} and patched.properties.desired["interval"] == 5
    assert patched.properties.desired["$version"] == 2
    with pytest.raises(HttpOperationError) as stale:
        registry.update_twin("dev1", Twin(tags={"site": "south"}), twin.etag)
    assert stale.value.response.status_code == 412
    replaced = registry.replace_twin(
        "dev1", Twin(tags={"tier": 1}, properties=TwinProperties(desired={"x": 1}))
    )
    assert replaced.tags == {"tier": 1}
    assert {k: v for k, v in replaced.properties.desired.items() if not k.startswith("$")} == {
        "x": 1
    }


def test_direct_method_through_the_sdk(
    hub: BackgroundHub, registry: IoTHubRegistryManager, devices: Any
) -> None:
    dev = devices("dev1")
    dev.subscribe("$iothub/methods/POST/#")

    def answer() -> None:
        request = dev.expect("$iothub/methods/POST/reboot/")
        rid = request.topic.split("$rid=")[1]
        dev.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"rebooting": true}')

    responder = threading.Thread(target=answer)
    responder.start()
    result = registry.invoke_device_method(
        "dev1",
        CloudToDeviceMethod(
            method_name="reboot", payload={"delay": 0}, response_timeout_in_seconds=10
        ),
    )
    responder.join(10)
    assert (result.status, result.payload) == (200, {"rebooting": True})
    dev.client.unsubscribe("$iothub/methods/POST/#")
    time.sleep(0.2)
    with pytest.raises(HttpOperationError) as offline:
        registry.invoke_device_method(
            "dev1", CloudToDeviceMethod(method_name="reboot", response_timeout_in_seconds=5)
        )
    assert offline.value.response.status_code == 404


def test_query_on_tags_and_reported_properties(
    registry: IoTHubRegistryManager, devices: Any
) -> None:
    for device_id, site in (("a", "north"), ("b", "south"), ("c", "north")):
        registry.create_device_with_sas(device_id, None, None, "enabled")
        registry.update_twin(device_id, Twin(tags={"site": site}))
    dev = devices("c")
    dev.subscribe("$iothub/twin/res/#")
    dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"fw": "2.0"}')
    dev.expect("$iothub/twin/res/204")

    def ids(query: str) -> list[str]:
        return sorted(
            t.device_id for t in registry.query_iot_hub(QuerySpecification(query=query)).items
        )

    assert ids("SELECT * FROM devices WHERE tags.site = 'north'") == ["a", "c"]
    assert ids("SELECT * FROM devices WHERE tags.site != 'north'") == ["b"]
    either = "tags.site IN ('south', 'west') OR properties.reported.fw = '2.0'"
    assert ids(f"SELECT * FROM devices WHERE {either}") == ["b", "c"]
    assert ids(
        "SELECT * FROM devices WHERE tags.site = 'north' AND properties.reported.fw = '2.0'"
    ) == ["c"]
    first = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), None, 2)
    assert len(first.items) == 2 and first.continuation_token
    rest_page = registry.query_iot_hub(
        QuerySpecification(query="SELECT * FROM devices"), first.continuation_token, 2
    )
    assert [t.device_id for t in rest_page.items] == ["c"] and rest_page.continuation_token is None


def test_policies_grant_only_their_rights(
    hub: BackgroundHub, registry: IoTHubRegistryManager
) -> None:
    registry.create_device_with_sas("dev1", None, None, "enabled")
    reader = _manager(hub, "registryRead")
    assert reader.get_device("dev1").device_id == "dev1"
    with pytest.raises(HttpOperationError) as denied:
        reader.create_device_with_sas("dev2", None, None, "enabled")
    assert denied.value.response.status_code == 401
    service = _manager(hub, "service")
    assert service.get_twin("dev1").device_id == "dev1"
    with pytest.raises(HttpOperationError) as no_registry:
        service.delete_device("dev1")
    assert no_registry.value.response.status_code == 401


BAD_TOKENS = [
    ("no-token", None),
    ("expired", "expired"),
    ("wrong-key", "wrong-key"),
    ("device-scoped", "device-scoped"),
    ("unknown-policy", "unknown-policy"),
]


@pytest.mark.parametrize("kind", [k for _, k in BAD_TOKENS], ids=[n for n, _ in BAD_TOKENS])
def test_bad_service_tokens_get_401(hub: BackgroundHub, kind: str | None) -> None:
    import ssl

    import httpx

    port, key = hub.server.https_port, hub.core.policies["iothubowner"][0]
    now = int(time.time())
    tokens = {
        "expired": make_sas_token(
            f"localhost:{port}", key, now - 5, key_name="iothubowner", encode="quote_plus"
        ),
        "wrong-key": make_sas_token(
            f"localhost:{port}", hub.core.policies["service"][0], now + 60, key_name="iothubowner"
        ),
        "device-scoped": make_sas_token(
            "tinyfleet-hub.local/devices/dev1", key, now + 60, key_name="iothubowner"
        ),
        "unknown-policy": make_sas_token(f"localhost:{port}", key, now + 60, key_name="root"),
    }
    headers = {"Authorization": tokens[kind]} if kind else {}
    context = ssl.create_default_context(cafile=str(hub.server.ca_cert))
    with httpx.Client(verify=context) as client:
        response = client.get(
            f"https://localhost:{port}/devices?api-version=2021-04-12", headers=headers
        )
    assert response.status_code == 401
    assert rest(hub, "GET", "/devices").status_code == 200
