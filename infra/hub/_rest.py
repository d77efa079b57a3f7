"""The service REST surface (the part of IoT Hub's API that `azure-iot-hub` 2.7 calls).

Routes are glue: authorise, parse, call the engine or the registry, shape JSON. Errors become HTTP
in one place (`_refused`). Authorization is a shared access policy token (`skn` required) whose
policy holds the right the route needs; a bad or expired token is 401.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response

from infra.hub._auth import POLICY_RIGHTS, Right, parse_sas_token, scope_covers, verify_signature
from infra.hub._errors import AuthenticationFailed, RequestRefused
from infra.hub._hub import HubCore
from infra.hub._registry import delete_device, device_json, put_device, query_twins, twin_json

__all__ = ["build_rest_app"]

_MAX_BODY = 512 * 1024
IfMatch = Annotated[str | None, Header(alias="If-Match")]


def _refused(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRefused)
    body = {"Message": f"ErrorCode:{exc.code};{exc.message}", "ExceptionMessage": ""}
    return JSONResponse(body, status_code=exc.status)


async def _capped_body(request: Request, cap: int = _MAX_BODY) -> bytes:
    """The body, read no further than `cap` bytes: a declared `Content-Length` over the cap is
    refused before a byte is read, and a chunked (or understated) body as soon as it passes it."""
    declared = request.headers.get("content-length")
    if declared is not None and (
        not (declared.isascii() and declared.isdigit()) or len(declared) > 18 or int(declared) > cap
    ):
        raise RequestRefused(413, "MessageTooLarge", "request body is too large")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > cap:
            raise RequestRefused(413, "MessageTooLarge", "request body is too large")
    return bytes(received)


async def _json_body(request: Request) -> Any:
    raw = await _capped_body(request)
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        raise RequestRefused(400, "ArgumentInvalid", "the body is not valid JSON") from exc


def build_rest_app(core: HubCore, https_port: Callable[[], int]) -> FastAPI:
    """The FastAPI app over `core`; `https_port` gives the bound port (for token scopes)."""
    app = FastAPI(title="tinyfleet mock IoT hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(RequestRefused, _refused)

    def authorize(needed: Right) -> Callable[..., Awaitable[None]]:
        async def check(authorization: Annotated[str | None, Header()] = None) -> None:
            if not authorization:
                raise RequestRefused(401, "IotHubUnauthorizedAccess", "no Authorization header")
            try:
                token = parse_sas_token(authorization)
                if token.key_name not in core.policies:
                    raise AuthenticationFailed(f"unknown policy {token.key_name!r}")
                port = https_port()
                names = (core.config.hostname, f"localhost:{port}", f"127.0.0.1:{port}")
                if not any(scope_covers(token.resource, name) for name in names):
                    raise AuthenticationFailed(f"token scope {token.resource!r} is not this hub")
                verify_signature(token, list(core.policies[token.key_name]), core.clock())
            except AuthenticationFailed as exc:
                raise RequestRefused(401, "IotHubUnauthorizedAccess", str(exc)) from exc
            if not POLICY_RIGHTS[token.key_name] & needed:
                raise RequestRefused(401, "IotHubUnauthorizedAccess", "policy lacks the right")

        return check

    read_registry = Depends(authorize(Right.REGISTRY_READ))
    write_registry = Depends(authorize(Right.REGISTRY_WRITE))
    service = Depends(authorize(Right.SERVICE_CONNECT))
    read_twins = Depends(authorize(Right.SERVICE_CONNECT | Right.REGISTRY_READ))

    @app.put("/devices/{device_id}", dependencies=[write_registry])
    async def create_or_update_device(
        device_id: str, request: Request, if_match: IfMatch = None
    ) -> Any:
        record = put_device(core, device_id, await _json_body(request), if_match)
        return device_json(core, record)

    @app.get("/devices/{device_id}", dependencies=[read_registry])
    async def get_device(device_id: str) -> Any:
        return device_json(core, core.device(device_id))

    @app.delete("/devices/{device_id}", dependencies=[write_registry], status_code=204)
    async def remove_device(device_id: str, if_match: IfMatch = None) -> Response:
        delete_device(core, device_id, if_match)
        return Response(status_code=204)

    @app.get("/devices", dependencies=[read_registry])
    async def list_devices(top: int = 1000) -> Any:
        core.store.refresh_devices()
        records = [core.store.devices[d] for d in sorted(core.store.devices)][: max(top, 0)]
        return [device_json(core, r) for r in records]

    @app.get("/twins/{device_id}", dependencies=[read_twins])
    async def get_twin(device_id: str) -> Any:
        core.device(device_id)
        return twin_json(core, core.store.twins[device_id])

    @app.patch("/twins/{device_id}", dependencies=[service])
    async def update_twin(device_id: str, request: Request, if_match: IfMatch = None) -> Any:
        body = await _json_body(request)
        return twin_json(core, core.update_twin(device_id, body, if_match, replace_all=False))

    @app.put("/twins/{device_id}", dependencies=[service])
    async def replace_twin(device_id: str, request: Request, if_match: IfMatch = None) -> Any:
        body = await _json_body(request)
        return twin_json(core, core.update_twin(device_id, body, if_match, replace_all=True))

    @app.post("/twins/{device_id}/methods", dependencies=[service])
    async def invoke_method(device_id: str, request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
            raise RequestRefused(400, "ArgumentInvalid", "methodName is required")
        timeout = body.get("responseTimeoutInSeconds") or 30
        if not isinstance(timeout, int):
            raise RequestRefused(
                400, "ArgumentInvalid", "responseTimeoutInSeconds must be an integer"
            )
        payload = body.get("payload")
        status, result = await core.invoke_method(
            device_id, body["methodName"], None if payload == "" else payload, timeout
        )
        return {"status": status, "payload": result}

    @app.post("/devices/query", dependencies=[read_twins])
    async def query(
        request: Request,
        max_items: Annotated[int | None, Header(alias="x-ms-max-item-count")] = None,
        continuation: Annotated[str | None, Header(alias="x-ms-continuation")] = None,
    ) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise RequestRefused(400, "ArgumentInvalid", 'the body must be {"query": "..."}')
        page, next_token = query_twins(core, body["query"], max_items, continuation)
        headers = {"x-ms-item-type": "twin"}
        if next_token is not None:
            headers["x-ms-continuation"] = next_token
        return JSONResponse(page, headers=headers)

    @app.post("/devices/{device_id}/messages/deviceBound", dependencies=[service])
    async def send_c2d(device_id: str, request: Request) -> Any:
        """Mock-specific: the service SDK sends C2D over AMQP, which the mock does not speak."""
        properties = {
            k[len("iothub-app-") :]: v
            for k, v in request.headers.items()
            if k.startswith("iothub-app-")
        }
        if "iothub-messageid" in request.headers:
            properties["$.mid"] = request.headers["iothub-messageid"]
        message_id = core.send_c2d(device_id, await _capped_body(request), dict(properties))
        return {"messageId": message_id}

    @app.delete("/devices/{device_id}/commands", dependencies=[service])
    async def purge_c2d(device_id: str) -> Any:
        core.device(device_id)
        return {
            "deviceId": device_id,
            "moduleId": None,
            "totalMessagesPurged": core.store.purge_c2d(device_id),
        }

    @app.get("/statistics/devices", dependencies=[read_registry])
    async def registry_statistics() -> Any:
        enabled = sum(1 for r in core.store.devices.values() if r.status == "enabled")
        total = len(core.store.devices)
        return {
            "totalDeviceCount": total,
            "enabledDeviceCount": enabled,
            "disabledDeviceCount": total - enabled,
        }

    @app.get("/statistics/service", dependencies=[service])
    async def service_statistics() -> Any:
        return {"connectedDeviceCount": len(core.links)}

    return app
