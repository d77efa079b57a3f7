"""The in-memory hub gateway: a registry and twins in dicts, with the device's side exposed.

As strict as the SDK adapter (same ids, tags, merge-patch and `$version` rules); tests and the
engine's simulations play the devices through `report`, `connect` and `disconnect`.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from device_agent.protocol import COMPONENT
from service.hubgateway._errors import (
    DeviceExists,
    DeviceNotFound,
    DeviceOffline,
    DeviceTimedOut,
    HubRequestError,
)
from service.hubgateway._model import (
    DeviceTwin,
    MethodResult,
    RegisteredDevice,
    ServiceSpec,
    check_device_id,
    check_tags,
)
from service.hubgateway._port import PAGE

__all__ = ["MemoryHubGateway", "MethodHandler"]

# A device's direct-method handler: (method name, payload) -> (status, payload).
# Raising TimeoutError stands for a device that does not answer in time.
MethodHandler = Callable[[str, Any], tuple[int, Any]]


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """JSON merge patch, as the hub applies it to tags and properties: None removes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            merge_patch(child, value)
        else:
            target[key] = value


class _Device:
    def __init__(self, device_id: str, enabled: bool) -> None:
        self.device_id = device_id
        self.status = "enabled" if enabled else "disabled"
        self.key = base64.b64encode(os.urandom(32)).decode()
        self.version = 1
        self.tags: dict[str, Any] = {}
        self.desired: dict[str, Any] = {}
        self.desired_version = 1
        self.reported: dict[str, Any] = {}
        self.reported_version = 1
        self.handler: MethodHandler | None = None
        self.last_activity: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "etag": base64.b64encode(self.version.to_bytes(8, "big")).decode(),
            "status": self.status,
            "connectionState": "Connected" if self.handler else "Disconnected",
            "lastActivityTime": self.last_activity,
            "tags": _copy(self.tags),
            "properties": {
                "desired": {**_copy(self.desired), "$version": self.desired_version},
                "reported": {**_copy(self.reported), "$version": self.reported_version},
            },
        }


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in value.items()}


class MemoryHubGateway:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._devices: dict[str, _Device] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _device(self, device_id: str) -> _Device:
        device = self._devices.get(check_device_id(device_id))
        if device is None:
            raise DeviceNotFound(device_id)
        return device

    # -- the port ----------------------------------------------------------------------------

    def register_device(self, device_id: str, *, enabled: bool = True) -> RegisteredDevice:
        with self._lock:
            if check_device_id(device_id) in self._devices:
                raise DeviceExists(device_id)
            device = self._devices[device_id] = _Device(device_id, enabled)
            return RegisteredDevice(device_id, device.status, device.key)

    def delete_device(self, device_id: str) -> None:
        with self._lock:
            self._device(device_id)
            del self._devices[device_id]

    def get_twin(self, device_id: str) -> DeviceTwin:
        with self._lock:
            return DeviceTwin.from_document(self._device(device_id).document())

    def iter_twins(
        self, tags: Mapping[str, str] | None = None, *, page_size: int = PAGE
    ) -> Iterator[DeviceTwin]:
        wanted = check_tags(tags or {})
        if not 1 <= page_size <= 1000:
            raise HubRequestError("page_size must be 1..1000")
        after = ""
        while True:
            with self._lock:
                ids = sorted(
                    d
                    for d, dev in self._devices.items()
                    if d > after and all(dev.tags.get(k) == v for k, v in wanted.items())
                )[:page_size]
                page = [DeviceTwin.from_document(self._devices[d].document()) for d in ids]
            yield from page
            if len(ids) < page_size:
                return
            after = ids[-1]

    def get_twins(self, device_ids: Sequence[str]) -> dict[str, DeviceTwin]:
        for device_id in device_ids:
            check_device_id(device_id)
        with self._lock:
            return {
                d: DeviceTwin.from_document(self._devices[d].document())
                for d in device_ids
                if d in self._devices
            }

    def set_tags(self, device_id: str, tags: Mapping[str, str | None]) -> DeviceTwin:
        patch = check_tags(tags)
        with self._lock:
            device = self._device(device_id)
            merge_patch(device.tags, patch)
            device.version += 1
            return DeviceTwin.from_document(device.document())

    def set_desired_service(self, device_id: str, spec: ServiceSpec) -> int:
        with self._lock:
            device = self._device(device_id)
            merge_patch(device.desired, {COMPONENT: spec.component()})
            device.desired_version += 1
            device.version += 1
            return device.desired_version

    def invoke_method(
        self, device_id: str, method: str, payload: Any = None, *, timeout_s: int = 30
    ) -> MethodResult:
        if not method or not 5 <= timeout_s <= 300:
            raise HubRequestError("a method needs a name and a timeout of 5..300 s")
        with self._lock:
            handler = self._device(device_id).handler
        if handler is None:
            raise DeviceOffline(f"device {device_id!r} is not online")
        try:
            status, result = handler(method, payload)
        except TimeoutError as exc:
            raise DeviceTimedOut(f"{device_id!r} did not answer {method!r}") from exc
        return MethodResult(status, result)

    # -- the device's side -------------------------------------------------------------------

    def connect(self, device_id: str, handler: MethodHandler) -> None:
        with self._lock:
            device = self._device(device_id)
            device.handler = handler
            device.last_activity = self._clock().isoformat()

    def disconnect(self, device_id: str) -> None:
        with self._lock:
            self._device(device_id).handler = None

    def report(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge a reported-properties patch, as the agent's PATCH does; returns the version."""
        with self._lock:
            device = self._device(device_id)
            merge_patch(device.reported, patch)
            device.reported_version += 1
            device.last_activity = self._clock().isoformat()
            return device.reported_version

    def desired(self, device_id: str) -> dict[str, Any]:
        """The full desired document, as the device receives it on `GET` of its twin."""
        with self._lock:
            device = self._device(device_id)
            return {**_copy(device.desired), "$version": device.desired_version}
