"""Device authentication against registry records: one row per credential case."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from infra.hub import AuthenticationFailed, make_sas_token
from infra.hub import _codec as mqtt
from infra.hub._certs import issue_device_certificate
from infra.hub._identity import check_device_credentials
from infra.hub._store import DeviceRecord

HOST = "hub.local"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
POLICY_KEY = "cG9saWN5LWtleS1wb2xpY3kta2V5LXBvbGljeS1rZXk="
POLICIES = {"device": (POLICY_KEY, POLICY_KEY), "service": (POLICY_KEY, POLICY_KEY)}
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base: Path = tmp_path_factory.mktemp("certs")
    out = {}
    for name in ("dev1", "dev2"):
        paths, _ = issue_device_certificate(base, name)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        out[name] = cert.public_bytes(serialization.Encoding.DER)
    return out


def _connect(device: str = "dev1", token: str | None = None) -> mqtt.Connect:
    password = token.encode() if token is not None else None
    return mqtt.Connect(device, 60, False, f"{HOST}/{device}/?api-version=1", password)


def _token(scope: str = f"{HOST}/devices/dev1", key: str = KEY, name: str | None = None) -> str:
    return make_sas_token(scope, key, NOW + 60, key_name=name)


def _thumb(der: bytes) -> str:
    from infra.hub._auth import thumbprint

    return thumbprint(der)


CASES = [
    ("device-key", "sas", _token(), None, True),
    (
        "device-policy-all-devices",
        "sas",
        _token(f"{HOST}/devices", POLICY_KEY, "device"),
        None,
        True,
    ),
    (
        "service-policy-cannot-connect",
        "sas",
        _token(f"{HOST}/devices", POLICY_KEY, "service"),
        None,
        False,
    ),
    ("policy-token-without-policy-key", "sas", _token(name="device"), None, False),
    ("sas-for-an-x509-device", "selfSigned", _token(), None, False),
    ("thumbprint-match", "selfSigned", None, "dev1", True),
    ("thumbprint-of-another-cert", "selfSigned", None, "dev2", False),
    ("ca-signed-cn-match", "certificateAuthority", None, "dev1", True),
    ("ca-signed-cn-mismatch", "certificateAuthority", None, "dev2", False),
    ("cert-for-a-sas-device", "sas", None, "dev1", False),
    ("no-credentials", "sas", None, None, False),
]


@pytest.mark.parametrize(
    ("auth_type", "token", "cert", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_credentials(
    certs: dict[str, bytes], auth_type: str, token: str | None, cert: str | None, accepted: bool
) -> None:
    record = DeviceRecord(
        "dev1", "1", auth_type=auth_type, primary_key=KEY, primary_thumbprint=_thumb(certs["dev1"])
    )
    peer = certs[cert] if cert else None
    if accepted:
        assert (
            check_device_credentials(HOST, record, POLICIES, _connect(token=token), peer, NOW)
            == "dev1"
        )
    else:
        with pytest.raises(AuthenticationFailed):
            check_device_credentials(HOST, record, POLICIES, _connect(token=token), peer, NOW)


def test_a_record_of_another_device_never_authenticates() -> None:
    record = DeviceRecord("dev2", "1", primary_key=KEY)
    with pytest.raises(AuthenticationFailed):
        check_device_credentials(HOST, record, POLICIES, _connect(token=_token()), None, NOW)
