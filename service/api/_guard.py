"""`BodyGuard`: an ASGI middleware that decides on a request from its headers before a byte of
its body is read, then holds the body to a size limit while it streams in.

Invariants:
- A request under the API prefix that carries a body (a non-zero Content-Length or any
  Transfer-Encoding) is authenticated from its Authorization header first: a missing, unknown
  or revoked token is a 401 problem and the body is never read. A multipart body (an upload)
  from a token that may not upload is a 403, unread too. (Other role checks stay with the
  routes' dependencies; this only makes sure nobody unentitled makes the server read much.)
- The body is capped: `ApiLimits.max_upload_body` for multipart uploads (the release service's
  upload budget plus the form's overhead), `ApiLimits.max_json_body` for everything else. A
  declared Content-Length over the cap is a 413 before reading; a body that grows past the cap
  while streaming (chunked, or lying about its length) is a 413 as soon as it does, with at most
  one more ASGI message read.
- At most `ApiLimits.max_concurrent_uploads` multipart bodies stream at once; one more is a 503
  problem (`busy`, with Retry-After) before a byte of it is read. The slot is freed when the
  request ends, however it ends.
- Requests without a body (GET, the dashboard's files, health) pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api._context import ApiContext
from service.api._problems import ApiProblem, problem, to_problem
from service.storage import ApiToken

__all__ = ["BodyGuard", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes its cap; FastAPI lets HTTPExceptions raised
    while reading a body through, so the app's handlers answer it as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        context: ApiContext,
        prefix: str,
        authenticate: Callable[[ApiContext, str | None], ApiToken],
        may_upload: Callable[[ApiToken], bool],
    ) -> None:
        self._app = app
        self._context = context
        self._prefix = prefix
        self._authenticate = authenticate
        self._may_upload = may_upload
        self._uploads = 0  # multipart bodies streaming now (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self._prefix):
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        if (declared is None and not chunked) or declared == "0":
            await self._app(scope, receive, send)
            return
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await problem(400, "invalid", "Content-Length is not a number")(scope, receive, send)
            return
        try:
            token = await anyio.to_thread.run_sync(
                self._authenticate, self._context, headers.get("authorization")
            )
        except ApiProblem as exc:
            await to_problem(exc)(scope, receive, send)
            return
        limits = self._context.limits
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        if multipart and not self._may_upload(token):
            detail = f"token {token.name!r} has role {token.role.value!r}; uploads need more"
            await problem(403, "forbidden", detail)(scope, receive, send)
            return
        limit = limits.max_upload_body if multipart else limits.max_json_body
        if declared is not None and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        if not multipart:
            await self._guarded(scope, receive, send, limit)
            return
        if self._uploads >= limits.max_concurrent_uploads:
            await _busy(limits.max_concurrent_uploads)(scope, receive, send)
            return
        self._uploads += 1
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            self._uploads -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, watched)
        except BodyTooLarge:
            # Raised where no handler saw it (a route reading the stream itself).
            if started:
                raise
            await _too_large(limit)(scope, receive, send)


def _busy(slots: int) -> ASGIApp:
    detail = f"{slots} uploads are already streaming in; retry in a few seconds"
    response = problem(503, "busy", detail)
    response.headers["Retry-After"] = "5"
    return response


def _too_large(limit: int) -> ASGIApp:
    return problem(413, "too-large", f"the request body is larger than {limit} bytes")
