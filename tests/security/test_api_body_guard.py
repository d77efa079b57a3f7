"""Request bodies are decided on from the headers first: an unauthenticated body is a 401 before
the server reads it, and an authenticated one is held to its cap while it streams (413).

The app is driven as ASGI with a `receive` that counts what the server pulled, so "not read" is
observed, not assumed: a 200 MB body offered in 64 KiB messages must stay (almost) unread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.api import ApiLimits
from service.storage import Role
from tests.integration.api._api import PROBLEM, Api, ApiWorld
from tests.security._api_world import full_api

CHUNK = 64 * 1024
LIMITS = ApiLimits(max_json_body=16 * 1024, max_upload_body=256 * 1024)
BIG = 200 * 1024 * 1024


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    read: int = 0  # body bytes the server pulled through receive

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM, self.headers
        out: dict[str, Any] = json.loads(self.body)
        return out


def call(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    total: int,
    *,
    first: bytes = b"",
) -> Reply:
    """Send `first` then zero bytes up to `total` in CHUNK messages, lazily, counting reads."""
    reply = Reply()

    async def run() -> None:
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent >= total:
                return {"type": "http.disconnect"}
            size = min(CHUNK, total - sent)
            head = first[sent : sent + size]
            chunk = head + b" " * (size - len(head))
            sent += size
            reply.read = sent
            return {"type": "http.request", "body": chunk, "more_body": sent < total}

        await app(_scope(method, path, headers), receive, _sink(reply))

    anyio.run(run)
    return reply


def _scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"/api/v1{path}",
        "raw_path": f"/api/v1{path}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("api.test", 80),
    }


def _sink(reply: Reply) -> Any:
    """An ASGI `send` that records the response in `reply`."""

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")

    return send


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiWorld, Api]]:
    tmp: Path = tmp_path_factory.mktemp("guard")
    with full_api(tmp, LIMITS) as (world, api):
        signer = world.tokens[Role.RELEASE_SIGNER]
        body = {"id": "rel-1", "hardware_ids": ["mt3620"], "counter": 2}
        assert api.post("/releases", json=body, token=signer).status_code == 201
        yield world, api


def _revoked(world: ApiWorld) -> str:
    secret = world.issue("revoked-one", Role.ADMIN)
    with world.storage.begin() as uow:
        token = uow.tokens.verify(secret)
        assert token is not None
        uow.tokens.revoke(token.id, world.clock())
    return secret


JSON = "application/json"
MULTIPART = "multipart/form-data; boundary=xyz"
UNAUTHENTICATED = [
    ("POST", "/rollouts", JSON, None, True, 401),
    ("POST", "/rollouts", JSON, None, False, 401),
    ("PUT", "/groups/g1", JSON, "Bearer not-a-token", True, 401),
    ("POST", "/tokens", JSON, "Basic YWRtaW46YWRtaW4=", False, 401),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, None, True, 401),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, None, False, 401),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, "revoked", False, 401),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, "viewer", False, 403),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, "operator", True, 403),
    ("POST", "/no-such-route", JSON, None, False, 401),
]
UNAUTHENTICATED_IDS = [
    "json-200MB-no-token-content-length",
    "json-200MB-no-token-chunked",
    "json-200MB-unknown-token",
    "json-200MB-basic-auth",
    "upload-200MB-no-token-content-length",
    "upload-200MB-no-token-chunked",
    "upload-200MB-revoked-token-chunked",
    "upload-200MB-viewer-token-chunked",
    "upload-200MB-operator-token-content-length",
    "unknown-route-200MB-no-token",
]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "authorization", "declared", "status"),
    UNAUTHENTICATED,
    ids=UNAUTHENTICATED_IDS,
)
def test_unentitled_body_is_refused_unread(
    world: tuple[ApiWorld, Api],
    method: str,
    path: str,
    content_type: str,
    authorization: str | None,
    declared: bool,
    status: int,
) -> None:
    w, _ = world
    headers = {"content-type": content_type}
    if authorization == "revoked":
        authorization = f"Bearer {_revoked(w)}"
    elif authorization in ("viewer", "operator"):
        authorization = f"Bearer {w.tokens[Role(authorization)]}"
    if authorization is not None:
        headers["authorization"] = authorization
    headers.update({"content-length": str(BIG)} if declared else {"transfer-encoding": "chunked"})
    reply = call(w.app, method, path, headers, BIG)
    assert reply.status == status, reply.body[:300]
    if status == 403:  # authenticated, but may not upload
        assert reply.problem()["code"] == "forbidden"
    else:
        assert reply.problem()["code"] == "unauthorized"
        assert reply.headers.get("www-authenticate") == "Bearer"
    assert reply.read == 0


OVERSIZED = [
    ("POST", "/rollouts", JSON, Role.OPERATOR, True, 0),
    ("POST", "/rollouts", JSON, Role.OPERATOR, False, LIMITS.max_json_body + CHUNK),
    ("PUT", "/groups/g1", "text/plain", Role.VIEWER, False, LIMITS.max_json_body + CHUNK),
    ("PUT", "/releases/rel-1/artifacts/m4-0", MULTIPART, Role.RELEASE_SIGNER, True, 0),
    (
        "PUT",
        "/releases/rel-1/artifacts/m4-0",
        MULTIPART,
        Role.RELEASE_SIGNER,
        False,
        LIMITS.max_upload_body + CHUNK,
    ),
]
OVERSIZED_IDS = [
    "json-declared-over-cap",
    "json-chunked-over-cap",
    "text-body-chunked-over-cap",
    "upload-declared-over-cap",
    "upload-chunked-over-cap",
]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "role", "declared", "max_read"),
    OVERSIZED,
    ids=OVERSIZED_IDS,
)
def test_oversized_body_is_413_while_streaming(
    world: tuple[ApiWorld, Api],
    method: str,
    path: str,
    content_type: str,
    role: Role,
    declared: bool,
    max_read: int,
) -> None:
    w, _ = world
    headers = {"content-type": content_type, "authorization": f"Bearer {w.tokens[role]}"}
    headers.update({"content-length": str(BIG)} if declared else {"transfer-encoding": "chunked"})
    first = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
    reply = call(
        w.app, method, path, headers, BIG, first=first if "multipart" in content_type else b""
    )
    assert reply.status == 413, reply.body[:300]
    problem = reply.problem()
    assert problem["code"] == "too-large" and problem["status"] == 413
    assert reply.read <= max_read


def test_bodies_within_the_cap_still_work(world: tuple[ApiWorld, Api]) -> None:
    _w, api = world
    group = {"name": "g", "kind": "tag", "selector": "fleet=demo"}
    assert api.put("/groups/g-ok", json=group).status_code == 200

    async def chunked() -> AsyncIterator[bytes]:
        yield json.dumps({**group, "name": "g2"}).encode()

    answer = api.put("/groups/g-ok2", content=chunked(), headers={"content-type": JSON})
    assert answer.status_code == 200, answer.text


def test_chunked_oversized_upload_through_a_client_is_413(world: tuple[ApiWorld, Api]) -> None:
    w, api = world
    sent = [0]

    async def body() -> AsyncIterator[bytes]:
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
        while sent[0] < 4 * LIMITS.max_upload_body:
            sent[0] += CHUNK
            yield b"\0" * CHUNK

    answer = api.put(
        "/releases/rel-1/artifacts/m4-0",
        content=body(),
        headers={"content-type": MULTIPART},
        token=w.tokens[Role.RELEASE_SIGNER],
    )
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_uploads_beyond_the_concurrency_bound_are_503_unread(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With one upload slot, a second upload while the first streams is refused at once and
    unread; the slot is free again when the first ends."""
    limits = ApiLimits(
        max_json_body=16 * 1024, max_upload_body=256 * 1024, max_concurrent_uploads=1
    )
    with full_api(tmp_path_factory.mktemp("busy"), limits) as (w, _api):
        headers = {
            "content-type": MULTIPART,
            "authorization": f"Bearer {w.tokens[Role.RELEASE_SIGNER]}",
            "transfer-encoding": "chunked",
        }
        first = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
        replies: dict[str, Reply] = {}

        async def run() -> None:
            streaming, release = anyio.Event(), anyio.Event()

            async def slow() -> None:
                reply = replies.setdefault("slow", Reply())
                sent = [False]

                async def receive() -> dict[str, Any]:
                    if not sent[0]:
                        sent[0] = True
                        reply.read = len(first)
                        return {"type": "http.request", "body": first, "more_body": True}
                    streaming.set()
                    await release.wait()
                    return {"type": "http.request", "body": b"--xyz--\r\n", "more_body": False}

                await w.app(
                    _scope("PUT", "/releases/rel-1/artifacts/m4-0", headers), receive, _sink(reply)
                )

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(slow)
                await streaming.wait()
                replies["second"] = await anyio.to_thread.run_sync(
                    lambda: call(w.app, "PUT", "/releases/rel-1/artifacts/m4-0", headers, BIG)
                )
                release.set()

        anyio.run(run)
        second = replies["second"]
        assert second.status == 503, second.body[:300]
        assert second.problem()["code"] == "busy"
        assert second.headers.get("retry-after") == "5"
        assert second.read == 0
        assert replies["slow"].status not in (0, 503), replies["slow"].body[:300]
        after = call(w.app, "PUT", "/releases/rel-1/artifacts/m4-0", headers, BIG, first=first)
        assert after.status == 413, after.body[:300]  # its slot was free: read up to the cap
