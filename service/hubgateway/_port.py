"""The hub gateway port: what the rollout engine and the registry sync ask of an IoT hub.

Invariants (checked by `tests/contract/hubgateway/`, for every adapter):
- Every failure is a `HubGatewayError` (see `_errors.py`).
- Tag and desired-property writes are merge patches: keys not named are left alone, a None
  value removes a tag; each desired write raises the twin's desired `$version`.
- `iter_twins` and `get_twins` read in pages (the hub's query API), never one call per device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from service.hubgateway._model import DeviceTwin, MethodResult, RegisteredDevice, ServiceSpec

__all__ = ["PAGE", "HubGateway"]

PAGE = 100  # twins per query page; IoT Hub caps a page at 1,000


class HubGateway(Protocol):
    def register_device(self, device_id: str, *, enabled: bool = True) -> RegisteredDevice:
        """Create a SAS-authenticated device with hub-generated keys; DeviceExists if taken."""
        ...

    def delete_device(self, device_id: str) -> None:
        """DeviceNotFound if absent."""
        ...

    def get_twin(self, device_id: str) -> DeviceTwin:
        """DeviceNotFound if absent."""
        ...

    def iter_twins(
        self, tags: Mapping[str, str] | None = None, *, page_size: int = PAGE
    ) -> Iterator[DeviceTwin]:
        """Every twin (whose tags equal `tags`, if given), by device id, page by page."""
        ...

    def get_twins(self, device_ids: Sequence[str]) -> dict[str, DeviceTwin]:
        """The twins of these devices, in batched queries; unknown ids are left out."""
        ...

    def set_tags(self, device_id: str, tags: Mapping[str, str | None]) -> DeviceTwin: ...

    def set_desired_service(self, device_id: str, spec: ServiceSpec) -> int:
        """Write `tinyfleet.service`; returns the twin's new desired `$version`."""
        ...

    def invoke_method(
        self, device_id: str, method: str, payload: Any = None, *, timeout_s: int = 30
    ) -> MethodResult:
        """DeviceOffline when no one answers the call, DeviceTimedOut when too late."""
        ...
