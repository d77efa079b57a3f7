"""The device side of the IoT Hub MQTT dialect: connection strings, SAS tokens, topics."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.hub_dialect import ConnectionString, DialectError, HubDialect, sas_token

KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
CONN = (
    f"HostName=tinyfleet-hub.local;DeviceId=dev-1;SharedAccessKey={KEY};GatewayHostName=localhost"
)


def test_connection_string_and_connect_fields() -> None:
    conn = ConnectionString.parse(CONN)
    assert (conn.connect_host, conn.device_id) == ("localhost", "dev-1")
    assert conn.username == "tinyfleet-hub.local/dev-1/?api-version=2021-04-12"
    password = conn.password(1_700_000_000, ttl_s=60)
    assert password is not None and password.endswith("&se=1700000060")


def test_sas_token_verifies_as_the_hub_checks_it() -> None:
    """The recipe from the protocol reference: HMAC over sr as sent, a newline, and se."""
    token = sas_token("tinyfleet-hub.local/devices/dev-1", KEY, 1_700_000_060)
    fields = dict(p.split("=", 1) for p in token[len("SharedAccessSignature ") :].split("&"))
    assert fields["sr"] == "tinyfleet-hub.local%2Fdevices%2Fdev-1"
    expected = hmac.new(
        base64.b64decode(KEY), f"{fields['sr']}\n{fields['se']}".encode(), hashlib.sha256
    ).digest()
    assert base64.b64decode(unquote(fields["sig"])) == expected


@pytest.mark.parametrize(
    "text",
    [
        "DeviceId=x;SharedAccessKey=" + KEY,
        "HostName=h;SharedAccessKey=" + KEY,
        "HostName=h;DeviceId=d",
        "HostName=h;DeviceId=d;SharedAccessKey=***",
        "HostName=;DeviceId=d;x509=true",
    ],
    ids=["no-host", "no-device", "no-credential", "key-not-base64", "empty-value"],
)
def test_bad_connection_strings_are_refused(text: str) -> None:
    with pytest.raises(DialectError):
        ConnectionString.parse(text)


def test_responses_match_requests_by_rid_and_unknown_ones_are_dropped() -> None:
    dialect = HubDialect("dev-1")
    rid, out = dialect.get_twin()
    assert out.topic == f"$iothub/twin/GET/?$rid={rid}"
    assert dialect.receive("$iothub/twin/res/200/?$rid=999", b"{}") is None
    answer = dialect.receive(f"$iothub/twin/res/200/?$rid={rid}", b"{}")
    assert answer is not None and (answer.kind, answer.status) == ("twin", 200)
    assert dialect.receive(f"$iothub/twin/res/200/?$rid={rid}", b"{}") is None  # answered once
    rid, _ = dialect.patch_reported(b"{}")
    patched = dialect.receive(f"$iothub/twin/res/204/?$rid={rid}&$version=5", b"")
    assert patched is not None and (patched.kind, patched.version) == ("reported", 5)


def test_desired_methods_and_c2d_are_parsed() -> None:
    dialect = HubDialect("dev-1")
    desired = dialect.receive("$iothub/twin/PATCH/properties/desired/?$version=8", b"{}")
    assert desired is not None and desired.version == 8
    method = dialect.receive("$iothub/methods/POST/get-status/?$rid=7", b"{}")
    assert method is not None and (method.name, method.rid) == ("get-status", "7")
    c2d = dialect.receive("devices/dev-1/messages/devicebound/%24.mid=abc&a%2Bb=x+y", b"hi")
    assert c2d is not None and c2d.properties == {"$.mid": "abc", "a+b": "x+y"}


def test_telemetry_topic_carries_the_property_bag() -> None:
    out = HubDialect("dev-1").telemetry(b"{}", {"$.mid": "dev-1:1", "$.ct": "application/json"})
    assert out.topic == "devices/dev-1/messages/events/%24.mid=dev-1%3A1&%24.ct=application%2Fjson"
    assert out.qos == 1


@given(st.text(max_size=80), st.binary(max_size=64))
def test_receive_fails_only_with_dialect_error(topic: str, payload: bytes) -> None:
    with contextlib.suppress(DialectError):
        HubDialect("dev-1").receive(topic, payload)
