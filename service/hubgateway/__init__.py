"""The hub gateway port (registry, twin tags, the `tinyfleet` desired property, reported twins,
direct methods) and its adapters: the `azure-iot-hub` SDK (Azure or the mock hub) and memory."""

from __future__ import annotations

from service.hubgateway._errors import (
    DeviceExists,
    DeviceNotFound,
    DeviceOffline,
    DeviceTimedOut,
    DeviceUnreachable,
    HubConfigError,
    HubGatewayError,
    HubRequestError,
    HubUnavailable,
)
from service.hubgateway._memory import MemoryHubGateway, MethodHandler
from service.hubgateway._model import DeviceTwin, MethodResult, RegisteredDevice, ServiceSpec
from service.hubgateway._port import HubGateway
from service.hubgateway._sdk import SdkHubGateway

__all__ = [
    "DeviceExists",
    "DeviceNotFound",
    "DeviceOffline",
    "DeviceTimedOut",
    "DeviceTwin",
    "DeviceUnreachable",
    "HubConfigError",
    "HubGateway",
    "HubGatewayError",
    "HubRequestError",
    "HubUnavailable",
    "MemoryHubGateway",
    "MethodHandler",
    "MethodResult",
    "RegisteredDevice",
    "SdkHubGateway",
    "ServiceSpec",
]
