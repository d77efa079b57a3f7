"""The hub's REST side caps request bodies while reading them: one row per way to send too much.

The app runs in memory (httpx's ASGI transport pulls the body only when the app asks for it), so
each row counts how much of its body the hub read before refusing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from infra.hub._auth import make_sas_token
from infra.hub._rest import _MAX_BODY, build_rest_app
from tests.unit.hub.memory_hub import MemoryHub

PORT = 8443
CHUNK = 64 * 1024
HUGE = 100 * 1024 * 1024  # what the attacker would send if the hub kept reading


class Body:
    """A body of `total` bytes, yielded in CHUNK pieces, remembering how much was pulled."""

    def __init__(self, total: int = HUGE) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            piece = b" " * min(CHUNK, self.total - self.pulled)
            self.pulled += len(piece)
            yield piece


ROWS = [
    ("chunked-twin-patch", "PATCH", "/twins/dev1", {}),
    ("chunked-device-put", "PUT", "/devices/dev2", {}),
    ("chunked-query", "POST", "/devices/query", {}),
    ("chunked-c2d", "POST", "/devices/dev1/messages/deviceBound", {}),
    ("content-length-over-cap", "PATCH", "/twins/dev1", {"Content-Length": str(HUGE)}),
    ("content-length-huge-number", "PATCH", "/twins/dev1", {"Content-Length": "9" * 5000}),
    ("content-length-understated", "PATCH", "/twins/dev1", {"Content-Length": "10"}),
]


@pytest.mark.parametrize(
    ("method", "path", "headers"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_an_oversized_body_is_refused_before_it_is_read(
    memhub: MemoryHub, method: str, path: str, headers: dict[str, str]
) -> None:
    memhub.add_device("dev1")
    key = memhub.core.policies["iothubowner"][0]
    token = make_sas_token(
        f"localhost:{PORT}",
        key,
        int(memhub.now) + 600,
        key_name="iothubowner",
        encode="quote_plus",
    )
    body = Body()
    app = build_rest_app(memhub.core, lambda: PORT)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.request(
                method,
                f"{path}?api-version=2021-04-12",
                content=body,
                headers={"Authorization": token, "Content-Type": "application/json", **headers},
            )

    response = memhub.loop.run_until_complete(send())
    assert response.status_code == 413
    assert "MessageTooLarge" in response.json()["Message"]
    assert body.pulled <= _MAX_BODY + CHUNK  # refused at the cap, not at the end of the body
    assert memhub.core.store.count_c2d("dev1") == 0


def test_a_chunked_body_under_the_cap_is_read_whole(memhub: MemoryHub) -> None:
    memhub.add_device("dev1")
    key = memhub.core.policies["iothubowner"][0]
    token = make_sas_token(
        f"localhost:{PORT}", key, int(memhub.now) + 600, key_name="iothubowner", encode="quote_plus"
    )

    async def patch() -> httpx.Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"properties": {"desired": '
            yield b'{"fw": "v2"}}}'

        transport = httpx.ASGITransport(app=build_rest_app(memhub.core, lambda: PORT))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.patch(
                "/twins/dev1?api-version=2021-04-12",
                content=chunks(),
                headers={"Authorization": token, "Content-Type": "application/json"},
            )

    response = memhub.loop.run_until_complete(patch())
    assert response.status_code == 200, response.text
    assert response.json()["properties"]["desired"]["fw"] == "v2"
