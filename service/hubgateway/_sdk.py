"""The hub gateway over the unmodified `azure-iot-hub` SDK (`IoTHubRegistryManager`).

The same code talks to Azure IoT Hub and to the mock hub (`infra/hub`); only the service
connection string differs (for the mock, `REQUESTS_CA_BUNDLE` names its CA, which msrest honours).
Every SDK or transport exception is translated once, in `_call`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]
from azure.iot.hub.models import (  # type: ignore[import-untyped]
    CloudToDeviceMethod,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import ClientException, HttpOperationError

from device_agent.protocol import COMPONENT
from service.hubgateway._errors import (
    DeviceExists,
    DeviceNotFound,
    DeviceOffline,
    DeviceTimedOut,
    HubConfigError,
    HubGatewayError,
    HubRequestError,
    HubUnavailable,
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

__all__ = ["SdkHubGateway"]

T = TypeVar("T")
MAX_QUERY_CHARS = 6000  # IoT Hub refuses queries over 8 KiB; keep a margin for the SELECT part


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _translate(exc: Exception, device_id: str) -> HubGatewayError:
    if isinstance(exc, HttpOperationError):
        status = exc.response.status_code if exc.response is not None else 0
        text = exc.response.text if exc.response is not None else ""
        if status in (401, 403):
            return HubConfigError(f"the hub refused the service credentials ({status}): {text}")
        if status == 404 and "DeviceNotOnline" in text:
            return DeviceOffline(f"device {device_id!r} is not online")
        if status == 404:
            return DeviceNotFound(device_id)
        if status == 409:
            return DeviceExists(device_id)
        if status == 504:
            return DeviceTimedOut(f"device {device_id!r} did not answer in time")
        if status in (400, 412):
            return HubRequestError(f"the hub refused the request ({status}): {text}")
        return HubUnavailable(f"the hub answered {status}: {text}")
    if isinstance(exc, ClientException | OSError):
        return HubUnavailable(f"the hub is unreachable: {exc}")
    return HubUnavailable(f"unexpected hub failure: {exc!r}")


class SdkHubGateway:
    def __init__(self, registry: IoTHubRegistryManager) -> None:
        self._registry = registry

    @classmethod
    def from_connection_string(cls, connection_string: str, *, retries: int = 3) -> SdkHubGateway:
        """`retries`: msrest's own retries of transport failures and 5xx, with back-off."""
        if not 0 <= retries <= 10:
            raise HubConfigError("retries must be 0..10")
        try:
            registry = IoTHubRegistryManager.from_connection_string(connection_string)
        except (ValueError, TypeError, KeyError) as exc:
            raise HubConfigError(f"bad IoT Hub service connection string: {exc}") from exc
        registry.protocol.config.retry_policy.retries = retries
        return cls(registry)

    def _call(self, device_id: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except HubGatewayError:
            raise
        except Exception as exc:
            raise _translate(exc, device_id) from exc

    def register_device(self, device_id: str, *, enabled: bool = True) -> RegisteredDevice:
        status = "enabled" if enabled else "disabled"
        created = self._call(
            device_id,
            lambda: self._registry.create_device_with_sas(
                check_device_id(device_id), None, None, status
            ),
        )
        key = created.authentication.symmetric_key.primary_key if created.authentication else None
        return RegisteredDevice(created.device_id, created.status, key)

    def delete_device(self, device_id: str) -> None:
        self._call(device_id, lambda: self._registry.delete_device(check_device_id(device_id)))

    def get_twin(self, device_id: str) -> DeviceTwin:
        twin = self._call(device_id, lambda: self._registry.get_twin(check_device_id(device_id)))
        return _twin(twin)

    def _query(self, query: str, page_size: int) -> Iterator[DeviceTwin]:
        token: str | None = None
        while True:
            page = self._call(
                "",
                lambda token=token: self._registry.query_iot_hub(  # type: ignore[misc]
                    QuerySpecification(query=query), token, page_size
                ),
            )
            for item in page.items or []:
                yield _twin(item)
            token = page.continuation_token
            if not token:
                return

    def iter_twins(
        self, tags: Mapping[str, str] | None = None, *, page_size: int = PAGE
    ) -> Iterator[DeviceTwin]:
        wanted = check_tags(tags or {})
        if not 1 <= page_size <= 1000:
            raise HubRequestError("page_size must be 1..1000")
        conditions = [f"tags.{name} = {_quote(str(value))}" for name, value in wanted.items()]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._query(f"SELECT * FROM devices{where}", page_size)

    def get_twins(self, device_ids: Sequence[str]) -> dict[str, DeviceTwin]:
        found: dict[str, DeviceTwin] = {}
        for batch in _batches([_quote(check_device_id(d)) for d in device_ids]):
            query = f"SELECT * FROM devices WHERE deviceId IN ({','.join(batch)})"
            found.update((twin.device_id, twin) for twin in self._query(query, PAGE))
        return found

    def _patch(self, device_id: str, twin: Twin) -> Any:
        return self._call(
            device_id, lambda: self._registry.update_twin(check_device_id(device_id), twin, "*")
        )

    def set_tags(self, device_id: str, tags: Mapping[str, str | None]) -> DeviceTwin:
        return _twin(self._patch(device_id, Twin(tags=check_tags(tags))))

    def set_desired_service(self, device_id: str, spec: ServiceSpec) -> int:
        desired = {COMPONENT: spec.component()}
        updated = self._patch(device_id, Twin(properties=TwinProperties(desired=desired)))
        return int(updated.properties.desired["$version"])

    def invoke_method(
        self, device_id: str, method: str, payload: Any = None, *, timeout_s: int = 30
    ) -> MethodResult:
        if not method or not 5 <= timeout_s <= 300:
            raise HubRequestError("a method needs a name and a timeout of 5..300 s")
        request = CloudToDeviceMethod(
            method_name=method, payload=payload, response_timeout_in_seconds=timeout_s
        )
        result = self._call(
            device_id,
            lambda: self._registry.invoke_device_method(check_device_id(device_id), request),
        )
        return MethodResult(int(result.status), result.payload)


def _batches(quoted: list[str]) -> Iterator[list[str]]:
    """Split an IN list so that each query stays within the hub's length and page limits."""
    batch: list[str] = []
    length = 0
    for item in quoted:
        if batch and (length + len(item) > MAX_QUERY_CHARS or len(batch) == PAGE):
            yield batch
            batch, length = [], 0
        batch.append(item)
        length += len(item) + 1
    if batch:
        yield batch


def _twin(twin: Twin) -> DeviceTwin:
    properties = twin.properties
    return DeviceTwin.from_document(
        {
            "deviceId": twin.device_id,
            "etag": twin.etag,
            "status": twin.status,
            "connectionState": twin.connection_state,
            "lastActivityTime": twin.last_activity_time,
            "tags": twin.tags,
            "properties": {
                "desired": properties.desired if properties else {},
                "reported": properties.reported if properties else {},
            },
        }
    )
