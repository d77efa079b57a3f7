"""Streaming target verification: bytes in as they arrive, a verdict at the end.

Invariants:
- Never more than the signed length is accepted: the chunk that would exceed it is refused before
  it is hashed or passed on, so an endless stream stops at the first extra byte.
- A verdict is given once; after a failure every call raises the same error again.
- Memory use is constant: one hash state, no buffering.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from signing._errors import (
    SigningError,
    TargetHashError,
    TargetRejected,
    TargetTooLongError,
    TargetTruncatedError,
)

__all__ = ["TargetStreamVerifier", "VerifiedDigest"]


@dataclass(frozen=True)
class VerifiedDigest:
    path: str
    length: int
    sha256: str


class TargetStreamVerifier:
    __slots__ = ("_error", "_expected_sha256", "_hash", "_verdict", "length", "path", "received")

    def __init__(self, path: str, length: int, sha256: str) -> None:
        if length < 0 or len(sha256) != 64:
            raise SigningError(f"bad expectation for {path}: length {length}, sha256 {sha256!r}")
        self.path = path
        self.length = length
        self._expected_sha256 = sha256.lower()
        self._hash = hashlib.sha256()
        self.received = 0
        self._error: TargetRejected | None = None
        self._verdict: VerifiedDigest | None = None

    @property
    def remaining(self) -> int:
        return self.length - self.received

    def _fail(self, error: TargetRejected) -> TargetRejected:
        self._error = error
        return error

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._verdict is not None:
            raise SigningError(f"{self.path}: verdict given already")
        size = len(chunk)
        if size > self.length - self.received:
            raise self._fail(
                TargetTooLongError(f"{self.path}: more than the {self.length} signed bytes arrived")
            )
        self._hash.update(chunk)
        self.received += size

    def finish(self) -> VerifiedDigest:
        if self._error is not None:
            raise self._error
        if self._verdict is not None:
            return self._verdict
        if self.received != self.length:
            raise self._fail(
                TargetTruncatedError(
                    f"{self.path}: {self.received} of {self.length} signed bytes arrived"
                )
            )
        actual = self._hash.hexdigest()
        if not hmac.compare_digest(actual, self._expected_sha256):
            raise self._fail(TargetHashError(f"{self.path}: sha256 {actual} is not the signed one"))
        self._verdict = VerifiedDigest(self.path, self.length, actual)
        return self._verdict
