"""Shared access signatures, MQTT user names and access rights, as IoT Hub checks them.

Pure: time is a parameter, keys are passed in; standard library only.

Invariants:
- The HMAC is computed over `sr` exactly as it appears in the token (SDKs differ in how they
  encode it); fields are split on `&` then on the first `=`, in any order; `skn` is optional.
- A token is accepted only if its signature matches in constant time, `se` is in the future, and
  its decoded, lower-cased resource URI is a path-segment prefix of the resource it is used for.
- A device identity never authorises another device: scope is checked on the decoded `sr`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote

from infra.hub._errors import AuthenticationFailed

__all__ = [
    "POLICY_RIGHTS",
    "Right",
    "SasToken",
    "Username",
    "make_sas_token",
    "parse_sas_token",
    "parse_username",
    "scope_covers",
    "sign",
    "thumbprint",
    "verify_signature",
]

_PREFIX = "SharedAccessSignature "


class Right(enum.Flag):
    REGISTRY_READ = enum.auto()
    REGISTRY_WRITE = enum.auto()
    SERVICE_CONNECT = enum.auto()
    DEVICE_CONNECT = enum.auto()


# The shared access policies every IoT hub is created with.
POLICY_RIGHTS: dict[str, Right] = {
    "iothubowner": Right.REGISTRY_READ
    | Right.REGISTRY_WRITE
    | Right.SERVICE_CONNECT
    | Right.DEVICE_CONNECT,
    "service": Right.SERVICE_CONNECT,
    "device": Right.DEVICE_CONNECT,
    "registryRead": Right.REGISTRY_READ,
    "registryReadWrite": Right.REGISTRY_READ | Right.REGISTRY_WRITE,
}


@dataclass(frozen=True, slots=True)
class SasToken:
    resource_raw: str  # `sr` exactly as sent: the HMAC input
    signature: bytes
    expiry: int
    key_name: str | None

    @property
    def resource(self) -> str:
        return unquote(self.resource_raw).lower()


@dataclass(frozen=True, slots=True)
class Username:
    hostname: str
    device_id: str
    module_id: str | None


def parse_sas_token(token: str) -> SasToken:
    if not token.startswith(_PREFIX):
        raise AuthenticationFailed("not a SharedAccessSignature")
    fields: dict[str, str] = {}
    for part in token[len(_PREFIX) :].split("&"):
        key, sep, value = part.partition("=")
        if not sep or key in fields:
            raise AuthenticationFailed(f"malformed or repeated SAS field {key!r}")
        fields[key] = value
    try:
        resource, sig, expiry = fields["sr"], fields["sig"], fields["se"]
    except KeyError as exc:
        raise AuthenticationFailed(f"SAS token lacks {exc.args[0]!r}") from exc
    try:
        signature = base64.b64decode(unquote(sig), validate=True)
        expiry_s = int(expiry)
    except (binascii.Error, ValueError) as exc:
        raise AuthenticationFailed("SAS signature or expiry is not well formed") from exc
    return SasToken(resource, signature, expiry_s, fields.get("skn"))


def sign(resource_raw: str, expiry: int, key_b64: str) -> bytes:
    key = base64.b64decode(key_b64)
    return hmac.new(key, f"{resource_raw}\n{expiry}".encode(), hashlib.sha256).digest()


def verify_signature(token: SasToken, keys_b64: list[str], now: float) -> None:
    """Accept if one of the keys produced the signature and the token has not expired."""
    if token.expiry <= now:
        raise AuthenticationFailed("SAS token has expired")
    for key in keys_b64:
        try:
            expected = sign(token.resource_raw, token.expiry, key)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, token.signature):
            return
    raise AuthenticationFailed("SAS signature does not match")


def scope_covers(token_resource: str, target: str) -> bool:
    """True if `token_resource` is a path-segment prefix of `target` (both decoded)."""
    scope = token_resource.lower().rstrip("/")
    target = target.lower()
    return target == scope or target.startswith(scope + "/")


def parse_username(username: str) -> Username:
    """`{host}/{device}[/{module}]/?api-version=...` (the old `/api-version=` form too)."""
    path = username
    for marker in ("/?", "/api-version="):
        if marker in path:
            path = path.split(marker, 1)[0]
            break
    parts = [unquote(p) for p in path.rstrip("/").split("/")]
    if len(parts) not in (2, 3) or not all(parts):
        raise AuthenticationFailed("MQTT user name is not {hub}/{device}[/{module}]/?...")
    return Username(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def thumbprint(der_certificate: bytes) -> str:
    """The SHA-1 thumbprint IoT Hub registers, upper-case hex."""
    return hashlib.sha1(der_certificate, usedforsecurity=False).hexdigest().upper()


def make_sas_token(
    resource: str,
    key_b64: str,
    expiry: int,
    *,
    key_name: str | None = None,
    encode: str = "quote",
) -> str:
    """Build a token as the SDKs do: `quote` (device SDK), `quote_plus` (service SDK) or raw."""
    if encode == "quote":
        resource_raw = quote(resource, safe="")
    elif encode == "quote_plus":
        resource_raw = quote_plus(resource)
    else:
        resource_raw = resource
    signature = base64.b64encode(sign(resource_raw, expiry, key_b64)).decode()
    token = f"{_PREFIX}sr={resource_raw}&sig={quote(signature, safe='')}&se={expiry}"
    return token + (f"&skn={key_name}" if key_name else "")
