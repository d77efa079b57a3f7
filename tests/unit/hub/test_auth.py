"""SAS tokens and user names as the real SDKs produce them (reference §1.3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest

from infra.hub._auth import (
    make_sas_token,
    parse_sas_token,
    parse_username,
    scope_covers,
    verify_signature,
)
from infra.hub._errors import AuthenticationFailed

KEY = base64.b64encode(b"k" * 32).decode()
OTHER = base64.b64encode(b"o" * 32).decode()
NOW = 1_700_000_000
PREFIX = "SharedAccessSignature "
SR_PY, SR_C, SR_DOCS = (
    "hub.local%2Fdevices%2Fdev1",
    "hub.local/devices/dev1",
    "hub.local%2fdevices%2fdev1",
)


def _signed(sr: str, se: int, key: str = KEY) -> str:
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    return quote(base64.b64encode(digest).decode(), safe="")


@pytest.mark.parametrize(
    "token",
    [
        # azure-iot-device: quote(sr, safe=""), upper-case %2F, no skn
        f"{PREFIX}sr={SR_PY}&sig={_signed(SR_PY, NOW + 60)}&se={NOW + 60}",
        # azure-iot-sdk-c: sr not encoded at all
        f"{PREFIX}sr={SR_C}&sig={_signed(SR_C, NOW + 60)}&se={NOW + 60}",
        # the docs: lower-case %2f, fields in another order, skn absent
        f"{PREFIX}sig={_signed(SR_DOCS, NOW + 60)}&se={NOW + 60}&sr={SR_DOCS}",
    ],
    ids=["python-device-sdk", "c-sdk-unencoded", "docs-lowercase-reordered"],
)
def test_tokens_from_every_sdk_verify_over_sr_as_sent(token: str) -> None:
    parsed = parse_sas_token(token)
    verify_signature(parsed, [OTHER, KEY], NOW)
    assert scope_covers(parsed.resource, "hub.local/devices/dev1")


def test_service_sdk_tokens_use_quote_plus_and_a_key_name() -> None:
    token = make_sas_token(
        "localhost:8443", KEY, NOW + 60, key_name="iothubowner", encode="quote_plus"
    )
    parsed = parse_sas_token(token)
    assert parsed.resource_raw == "localhost%3A8443" and parsed.key_name == "iothubowner"
    verify_signature(parsed, [KEY], NOW)


REFUSED = [
    ("wrong-key", make_sas_token("hub.local/devices/dev1", OTHER, NOW + 60)),
    ("expired", make_sas_token("hub.local/devices/dev1", KEY, NOW - 1)),
    ("expires-now", make_sas_token("hub.local/devices/dev1", KEY, NOW)),
    ("no-prefix", "sr=a&sig=b&se=1"),
    ("missing-sig", f"SharedAccessSignature sr=a&se={NOW + 60}"),
    ("repeated-field", f"SharedAccessSignature sr=a&sr=b&sig=AAAA&se={NOW + 60}"),
    ("bad-base64", f"SharedAccessSignature sr=a&sig=%%%&se={NOW + 60}"),
    ("non-numeric-expiry", "SharedAccessSignature sr=a&sig=AAAA&se=soon"),
    (
        "sr-altered-after-signing",
        make_sas_token("hub.local/devices/dev1", KEY, NOW + 60).replace("dev1", "dev2"),
    ),
]


@pytest.mark.parametrize("token", [t for _, t in REFUSED], ids=[n for n, _ in REFUSED])
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationFailed):
        verify_signature(parse_sas_token(token), [KEY], NOW)


@pytest.mark.parametrize(
    ("scope", "target", "covers"),
    [
        ("hub.local/devices/dev1", "hub.local/devices/dev1", True),
        ("hub.local/devices", "hub.local/devices/dev1", True),
        ("HUB.local/Devices/dev1", "hub.local/devices/dev1", True),
        ("hub.local/devices/dev", "hub.local/devices/dev1", False),
        ("hub.local/devices/dev1", "hub.local/devices/dev2", False),
        ("hub.local/devices/dev1/modules/m", "hub.local/devices/dev1", False),
        ("other.local", "hub.local/devices/dev1", False),
    ],
    ids=["exact", "all-devices", "case", "not-a-segment", "other-device", "narrower", "other-hub"],
)
def test_scope_is_a_path_segment_prefix(scope: str, target: str, covers: bool) -> None:
    assert scope_covers(scope, target) is covers


@pytest.mark.parametrize(
    ("username", "device", "module"),
    [
        ("hub.local/dev1/?api-version=2021-04-12", "dev1", None),
        ("hub.local/dev1/?api-version=2019-10-01&DeviceClientType=py%2F2.14", "dev1", None),
        ("hub.local/dev1/DeviceUpdate/?api-version=2020-09-30&model-id=x", "dev1", "DeviceUpdate"),
        ("hub.local/dev1/api-version=2016-11-14", "dev1", None),
        ("hub.local/dev1/", "dev1", None),
    ],
    ids=["docs", "python-sdk", "module", "old-docs", "no-api-version"],
)
def test_usernames_of_every_form(username: str, device: str, module: str | None) -> None:
    parsed = parse_username(username)
    assert (parsed.hostname, parsed.device_id, parsed.module_id) == ("hub.local", device, module)


@pytest.mark.parametrize(
    "username", ["hub.local", "/dev1/?a", "a/b/c/d/?x"], ids=["no-device", "no-hub", "too-deep"]
)
def test_malformed_usernames_are_refused(username: str) -> None:
    with pytest.raises(AuthenticationFailed):
        parse_username(username)
