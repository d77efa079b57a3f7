"""The mock hub's exceptions, split by who must act.

    HubError
    ├── HubConfigError        the operator: the configuration or data directory is unusable
    ├── HubStorageError       the operator: SQLite failed underneath (disk full, corrupt file)
    ├── ProtocolViolation     the device: it broke MQTT or the IoT Hub dialect; close the connection
    ├── AuthenticationFailed  the device: credentials are wrong, expired or not allowed (CONNACK 5)
    └── RequestRefused        the caller of a twin, registry or method operation: an HTTP-style
                              status and IoT Hub error code, answered over MQTT or REST

Foreign exceptions (sqlite3, ssl, json) are translated where they enter, with `raise ... from exc`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "HubConfigError",
    "HubError",
    "HubStorageError",
    "ProtocolViolation",
    "RequestRefused",
]


class HubError(Exception):
    """Root of every error the mock hub raises on purpose."""


class HubConfigError(HubError):
    """The configuration or the data directory cannot be used."""


class HubStorageError(HubError):
    """The hub's SQLite storage failed."""


class ProtocolViolation(HubError):
    """A device broke MQTT 3.1.1 or the IoT Hub dialect; the hub closes its connection."""


class AuthenticationFailed(HubError):
    """A device's credentials were refused; the hub answers CONNACK 5 (not authorized)."""


class RequestRefused(HubError):
    """An operation was refused with an HTTP-style status and an IoT Hub error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
