"""Exceptions of the hub gateway port, split by who must act.

HubGatewayError
├── HubRequestError        the caller: the request names something that cannot be done
│   ├── DeviceNotFound     no such device in the hub's registry
│   └── DeviceExists       registering a device id that is taken
├── DeviceUnreachable      the device: a direct method found no one; retry when it is back
│   ├── DeviceOffline      not connected (or not subscribed to methods)
│   └── DeviceTimedOut     connected, but no answer within the method's timeout
├── HubConfigError         the operator: connection string, credentials, or missing rights
└── HubUnavailable         nobody yet: transport failure, throttling, a hub-side error; retry

Adapters translate their SDK's exceptions into this family with `raise ... from exc`.
"""

from __future__ import annotations

__all__ = [
    "DeviceExists",
    "DeviceNotFound",
    "DeviceOffline",
    "DeviceTimedOut",
    "DeviceUnreachable",
    "HubConfigError",
    "HubGatewayError",
    "HubRequestError",
    "HubUnavailable",
]


class HubGatewayError(Exception):
    """Root of every error the hub gateway port raises."""


class HubRequestError(HubGatewayError):
    pass


class DeviceNotFound(HubRequestError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not registered in the hub")
        self.device_id = device_id


class DeviceExists(HubRequestError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is already registered")
        self.device_id = device_id


class DeviceUnreachable(HubGatewayError):
    pass


class DeviceOffline(DeviceUnreachable):
    pass


class DeviceTimedOut(DeviceUnreachable):
    pass


class HubConfigError(HubGatewayError):
    pass


class HubUnavailable(HubGatewayError):
    pass
