"""Signed, expiring URLs for the local blob server: HMAC-SHA256 over what the URL grants.

A URL is `{base_url}{path}?exp={unix seconds}&sig={hex}`; a prefix grant adds `scope={prefix}`
and is valid for every path under it (python-tuf joins names onto a base URL itself, so a device
fetching a repository needs one query string for the whole folder). A grant of several folders
(`scopes={prefix}\n{prefix}...`, one device's image repository and its own director folder) is
valid under any of them; a folder never contains a newline (`check_path`).

Pure: time is a parameter, no I/O.

Invariants:
- A signature covers the kind of grant (blob, prefix or prefixes), the exact path or prefixes,
  and the expiry;
  changing any of them, or using the grant for a path outside its prefix, fails verification.
- Verification compares signatures in constant time and refuses expired grants (`exp <= now`).
- Keys shorter than 32 bytes and lifetimes over `max_expires_in` are refused when signing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from service.blobs._errors import BlobConfigError, BlobRequestError, InvalidBlobPath
from service.blobs._port import SignedPrefix, check_path, check_prefix

__all__ = ["MIN_KEY_BYTES", "LocallySigned", "SignatureRefused", "UrlSigner"]

MIN_KEY_BYTES = 32
_DOMAIN = b"tinyfleet-blob-url/1"


class SignatureRefused(BlobRequestError):
    """A URL whose signature is missing, forged, for another path, or expired (HTTP 403)."""


@dataclass(frozen=True)
class UrlSigner:
    key: bytes
    base_url: str  # where the blob server's `/blobs/` route is reachable, ending in '/'
    max_expires_in: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise BlobConfigError(f"the URL signing key must be at least {MIN_KEY_BYTES} bytes")
        if not self.base_url.endswith("/"):
            raise BlobConfigError(f"base URL {self.base_url!r} must end in '/'")

    def _mac(self, kind: str, scope: str, expires_at: int) -> str:
        message = b"\n".join((_DOMAIN, kind.encode(), scope.encode(), str(expires_at).encode()))
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def _expiry(self, now: int, expires_in: int) -> int:
        if not 0 < expires_in <= self.max_expires_in:
            raise BlobConfigError(f"expires_in must be 1..{self.max_expires_in} seconds")
        return now + expires_in

    def sign_blob(self, path: str, now: int, expires_in: int) -> str:
        exp = self._expiry(now, expires_in)
        query = urlencode({"exp": exp, "sig": self._mac("blob", check_path(path), exp)})
        return f"{self.base_url}{quote(path)}?{query}"

    def sign_prefix(self, prefix: str, now: int, expires_in: int) -> SignedPrefix:
        exp = self._expiry(now, expires_in)
        sig = self._mac("prefix", check_prefix(prefix), exp)
        query = urlencode({"exp": exp, "scope": prefix, "sig": sig})
        return SignedPrefix(f"{self.base_url}{quote(prefix)}", query)

    def sign_prefixes(
        self, base: str, prefixes: Sequence[str], now: int, expires_in: int
    ) -> SignedPrefix:
        exp = self._expiry(now, expires_in)
        scopes = _scopes(base, prefixes)
        sig = self._mac("prefixes", "\n".join(scopes), exp)
        query = urlencode({"exp": exp, "scopes": "\n".join(scopes), "sig": sig})
        return SignedPrefix(f"{self.base_url}{quote(base)}", query)

    def verify(self, path: str, params: Mapping[str, str], now: int) -> None:
        """Accept or raise SignatureRefused; `params` is the request's decoded query."""
        raw_exp, sig = params.get("exp", ""), params.get("sig", "")
        if not raw_exp.isdigit() or len(raw_exp) > 12 or not sig:
            raise SignatureRefused("missing or malformed exp/sig")
        exp = int(raw_exp)
        scope, scopes = params.get("scope"), params.get("scopes")
        if scope is not None and scopes is not None:
            raise SignatureRefused("a grant has one scope or a list of scopes, not both")
        if scopes is not None:
            folders = scopes.split("\n")
            if not all(f.endswith("/") for f in folders):
                raise SignatureRefused("every scope must be a folder")
            if not any(path.startswith(f) for f in folders):
                raise SignatureRefused(f"{path!r} is outside the granted prefixes")
            expected = self._mac("prefixes", scopes, exp)
        elif scope is None:
            expected = self._mac("blob", path, exp)
        else:
            if not scope.endswith("/") and scope != "":
                raise SignatureRefused("scope must be a folder")
            if not path.startswith(scope):
                raise SignatureRefused(f"{path!r} is outside the granted prefix")
            expected = self._mac("prefix", scope, exp)
        if not hmac.compare_digest(expected, sig):
            raise SignatureRefused("signature does not match")
        if exp <= now:
            raise SignatureRefused("the URL has expired")


def _scopes(base: str, prefixes: Sequence[str]) -> list[str]:
    check_prefix(base)
    scopes = sorted({check_prefix(p) for p in prefixes})
    if not scopes or any(not p or not p.startswith(base) for p in scopes):
        raise InvalidBlobPath(f"prefixes {prefixes!r} must be folders under {base!r}")
    return scopes


class LocallySigned:
    """Signed URLs for the stores that `BlobServer` serves (memory and filesystem)."""

    def __init__(self, signer: UrlSigner | None, clock: Callable[[], float]) -> None:
        self._signer = signer
        self._clock = clock

    def _signing(self) -> UrlSigner:
        if self._signer is None:
            raise BlobConfigError("this blob store has no URL signer: it is not served over HTTP")
        return self._signer

    def signed_url(self, path: str, expires_in: int) -> str:
        return self._signing().sign_blob(path, int(self._clock()), expires_in)

    def signed_prefix(self, prefix: str, expires_in: int) -> SignedPrefix:
        return self._signing().sign_prefix(prefix, int(self._clock()), expires_in)

    def signed_prefixes(self, base: str, prefixes: Sequence[str], expires_in: int) -> SignedPrefix:
        return self._signing().sign_prefixes(base, prefixes, int(self._clock()), expires_in)
