"""Device authentication: a CONNECT and a TLS client certificate against the registry.

Invariants:
- The user name names this hub and exactly one device, the same as the client id; module
  identities are refused.
- A SAS token signed with the device's key, or with a policy holding DeviceConnect, and scoped to
  (a segment prefix of) `{hostname}/devices/{id}`; or, without a password, a client certificate
  that TLS verified and that matches the registered thumbprint (`selfSigned`) or has CN = device
  id (`certificateAuthority`). Unknown and disabled devices are refused alike.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from infra.hub import _codec as mqtt
from infra.hub._auth import (
    POLICY_RIGHTS,
    Right,
    parse_sas_token,
    parse_username,
    scope_covers,
    thumbprint,
    verify_signature,
)
from infra.hub._errors import AuthenticationFailed
from infra.hub._store import DeviceRecord

__all__ = ["check_device_credentials"]


def check_device_credentials(
    hostname: str,
    record: DeviceRecord | None,
    policies: dict[str, tuple[str, str]],
    connect: mqtt.Connect,
    peer_certificate: bytes | None,
    now: float,
) -> str:
    """The authenticated device id, or `AuthenticationFailed`."""
    if connect.username is None:
        raise AuthenticationFailed("no user name")
    username = parse_username(connect.username)
    if username.hostname.lower() != hostname.lower():
        raise AuthenticationFailed(f"user name names hub {username.hostname!r}")
    if username.module_id is not None:
        raise AuthenticationFailed("module identities are not supported by the mock hub")
    device_id = username.device_id
    if connect.client_id != device_id:
        raise AuthenticationFailed("client id differs from the device id in the user name")
    if record is None or record.device_id != device_id or record.status != "enabled":
        raise AuthenticationFailed(f"device {device_id!r} is unknown or disabled")
    if connect.password is not None:
        token = parse_sas_token(connect.password.decode("utf-8", errors="replace"))
        target = f"{hostname}/devices/{device_id}"
        if not scope_covers(token.resource, target):
            raise AuthenticationFailed(f"token scope {token.resource!r} does not cover {target}")
        if token.key_name is None:
            keys = record.sas_keys() if record.auth_type == "sas" else []
        elif Right.DEVICE_CONNECT in POLICY_RIGHTS.get(token.key_name, Right(0)):
            keys = list(policies[token.key_name])
        else:
            raise AuthenticationFailed(f"policy {token.key_name!r} cannot connect devices")
        verify_signature(token, keys, now)
        return device_id
    if peer_certificate is None:
        raise AuthenticationFailed("neither a SAS token nor a client certificate")
    if record.auth_type == "selfSigned":
        if thumbprint(peer_certificate) not in record.thumbprints():
            raise AuthenticationFailed("client certificate thumbprint is not registered")
    elif record.auth_type == "certificateAuthority":
        if _common_name(peer_certificate) != device_id:
            raise AuthenticationFailed("client certificate CN is not the device id")
    else:
        raise AuthenticationFailed(f"device {device_id!r} does not use X.509")
    return device_id


def _common_name(der: bytes) -> str | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
