"""An HTTP client for the tinyfleet API (`/api/v1`), with one error family.

Every failure of a call surfaces as an `ApiError`, split by who must act:

    ApiError
     ├── Unreachable        the server cannot be reached (refused, DNS, timeout): check --server
     ├── BadResponse        the answer is not what the API promises (not JSON, wrong shape)
     └── ProblemError       the server answered with an error status and a problem+json body
          ├── AuthError     401 / 403: the token is missing, unknown, revoked or its role too low
          └── Refused       any other error status: the server refused the request (detail says why)

httpx's own exceptions never escape: they are translated here with `raise ... from exc`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

API_PREFIX = "/api/v1"
UPLOAD_CHUNK = 64 * 1024

Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None


def _query(params: Params) -> httpx.QueryParams | None:
    if params is None:
        return None
    pairs = params.items() if isinstance(params, Mapping) else params
    return httpx.QueryParams([(k, v) for k, v in pairs if v is not None])


ProgressCallback = Callable[[int], None]


class ApiError(Exception):
    """Root of every error raised by `ApiClient`."""


class Unreachable(ApiError):
    """The server could not be reached or did not answer in time."""


class BadResponse(ApiError):
    """The server's answer is not what the API promises."""


@dataclass
class ProblemError(ApiError):
    """The server answered with an error status; `problem` is its problem+json body."""

    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message())

    @property
    def code(self) -> str:
        return str(self.problem.get("code") or "")

    def message(self) -> str:
        """One line: the status, the problem's title and detail."""
        title = self.problem.get("title") or httpx.codes.get_reason_phrase(self.status)
        detail = self.problem.get("detail")
        code = f" [{self.code}]" if self.code else ""
        text = f"{self.status} {title}{code}"
        return f"{text}: {detail}" if detail and detail != title else text

    def details(self) -> list[str]:
        """Extra lines: validation errors and failed admission checks, one per line."""
        lines: list[str] = []
        for error in self.problem.get("errors") or []:
            if isinstance(error, Mapping):
                parts = [str(part) for part in error.get("loc") or []]
                loc = ".".join(parts[1:] if parts[:1] == ["body"] else parts)
                lines.append(f"{loc}: {error.get('msg', '')}" if loc else str(error.get("msg")))
        for check in self.problem.get("checks") or []:
            if isinstance(check, Mapping) and not check.get("ok", False):
                lines.append(f"check {check.get('name')}: {check.get('detail', 'failed')}")
        return lines


class AuthError(ProblemError):
    """401 or 403."""


class Refused(ProblemError):
    """Any other error status."""


def problem_error(response: httpx.Response) -> ProblemError:
    """The exception for an error response, whatever its body holds."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:200]
        body = {"detail": text} if text else {}
    cls = AuthError if response.status_code in (401, 403) else Refused
    return cls(response.status_code, body)


def api_base(server: str) -> str:
    """`http://host:8080`, `http://host:8080/` and `http://host:8080/api/v1` all mean one API."""
    base = server.strip().rstrip("/")
    if base.endswith(API_PREFIX):
        base = base[: -len(API_PREFIX)]
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"server URL {server!r} must start with http:// or https://")
    return base + API_PREFIX


class ApiClient:
    """A session with one server and one token; use as a context manager."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "tinyfleet-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server
        self._http = httpx.Client(
            base_url=api_base(server), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- one request ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json_body: Any = None,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON body (None for an empty one), or an `ApiError`."""
        try:
            response = self._http.request(
                method,
                path,
                params=_query(params),
                json=json_body,
                content=content,
                headers=headers,
            )
        except httpx.TimeoutException as exc:
            raise Unreachable(f"{self.server} did not answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.server}: {exc}") from exc
        if response.is_error:
            raise problem_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "?")
            raise BadResponse(f"{method} {path}: expected JSON, got {kind}") from exc

    def get(self, path: str, params: Params = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json_body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # -- pages ------------------------------------------------------------------------------

    def pages(
        self, path: str, params: Sequence[tuple[str, Any]] = (), *, limit: int, follow: bool
    ) -> Iterator[dict[str, Any]]:
        """Items of a paginated listing: one page of `limit`, or every page when `follow`."""
        after: str | None = None
        while True:
            query = [*params, ("limit", limit)]
            if after is not None:
                query.append(("after", after))
            page = self.get(path, query)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise BadResponse(f"GET {path}: expected a page of items")
            yield from page["items"]
            after = page.get("next_after")
            if not follow or not after:
                return

    # -- streamed upload --------------------------------------------------------------------

    def upload(
        self,
        path: str,
        artifact: Path,
        metadata: bytes,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """PUT a multipart body streamed from disk: the `metadata` field (the JSON sidecar, a
        plain form field), then the `file` part.

        The artifact is read in chunks of `UPLOAD_CHUNK` bytes; `progress(n)` is called after
        each chunk with the number of bytes just sent. The length is known up front, so the
        request carries a Content-Length rather than chunked encoding.
        """
        boundary = f"tinyfleet-{secrets.token_hex(12)}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        ).encode() + metadata
        name = json.dumps(artifact.name)[1:-1]
        head += (
            f"\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = artifact.stat().st_size  # OSError here is the caller's: a local file problem
        stream: BinaryIO = artifact.open("rb")

        def body() -> Iterator[bytes]:
            with stream:
                yield head
                while chunk := stream.read(UPLOAD_CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))
                yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        return self.request("PUT", path, content=body(), headers=headers)
