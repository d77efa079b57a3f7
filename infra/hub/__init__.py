"""A faithful mock Azure IoT Hub: MQTT 3.1.1 over TLS for devices, REST for the service, and a
durable, partitioned telemetry feed. See docs/hub.md.
"""

from __future__ import annotations

from infra.hub._auth import make_sas_token
from infra.hub._config import HubConfig, HubLimits
from infra.hub._errors import (
    AuthenticationFailed,
    HubConfigError,
    HubError,
    HubStorageError,
    ProtocolViolation,
    RequestRefused,
)
from infra.hub._feed import FeedConsumer, FeedEvent, TelemetryFeed
from infra.hub._provision import (
    ProvisionedDevice,
    device_connection_string,
    provision_device,
    provision_devices,
)
from infra.hub._server import BackgroundHub, HubServer, service_connection_string

__all__ = [
    "AuthenticationFailed",
    "BackgroundHub",
    "FeedConsumer",
    "FeedEvent",
    "HubConfig",
    "HubConfigError",
    "HubError",
    "HubLimits",
    "HubServer",
    "HubStorageError",
    "ProtocolViolation",
    "ProvisionedDevice",
    "RequestRefused",
    "TelemetryFeed",
    "device_connection_string",
    "make_sas_token",
    "provision_device",
    "provision_devices",
    "service_connection_string",
]
