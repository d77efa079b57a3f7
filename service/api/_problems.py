"""Every error the routes can meet becomes an `application/problem+json` answer, here and only
here (see the contract: `type`, `title`, `status`, `detail`, `code`, plus `errors` or `checks`).

| raised                                   | status | code           |
|------------------------------------------|--------|----------------|
| ApiProblem (routes, auth)                | given  | given          |
| storage NotFoundError                    | 404    | not-found      |
| storage ConflictError (exists, revision) | 409    | conflict       |
| storage UnavailableError / StorageError  | 503    | unavailable    |
| (503s carry a generic detail: the cause is logged, never sent)     |
| domain SpecError                         | 422    | invalid        |
| domain InvalidTransitionError            | 409    | conflict       |
| domain PreconditionError                 | 409    | precondition   |
| engine NotLeaderError                    | 503    | not-leader     |
| engine UnsupportedError                  | 422    | invalid        |
| release AdmissionError                   | 422    | admission      |
| release ReleaseNotFoundError             | 404    | not-found      |
| release ReleaseConflictError             | 409    | conflict       |
| release Unavailable/TrustError           | 503    | unavailable    |
| other ReleaseError (invalid input)       | 422    | invalid        |
| hub gateway / blob store errors          | 503    | unavailable    |
| request validation (pydantic)            | 422    | invalid        |
| HTTPException (unknown route, method)    | as is  | by status      |
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.blobs import BlobError
from service.domain.errors import (
    DomainError,
    InvalidTransitionError,
    PreconditionError,
    SpecError,
)
from service.engine import EngineError, NotLeaderError, UnsupportedError
from service.hubgateway import HubGatewayError
from service.releases import (
    AdmissionError,
    ReleaseConflictError,
    ReleaseError,
    ReleaseNotFoundError,
    ReleaseTrustError,
    ReleaseUnavailableError,
)
from service.storage import ConflictError, NotFoundError, StorageError

__all__ = [
    "PROBLEM_RESPONSES",
    "ApiProblem",
    "CheckOut",
    "FieldError",
    "Problem",
    "install_problem_handlers",
    "problem_responses",
]

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://tinyfleet.dev/problems/"
_log = logging.getLogger(__name__)

_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "not-allowed",
    409: "conflict",
    413: "too-large",
    415: "invalid",
    422: "invalid",
    503: "unavailable",
}


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None
    checks: list[CheckOut] | None = None


class ApiProblem(Exception):
    """Raised by routes and dependencies for an answer the table above does not cover."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _checks(exc: Exception) -> list[dict[str, Any]]:
    out = []
    for check in getattr(exc, "checks", ()) or ():
        if isinstance(check, Mapping):
            name, ok, detail = check.get("name"), check.get("ok"), check.get("detail", "")
        else:
            name = getattr(check, "name", "")
            ok = getattr(check, "ok", False)
            detail = getattr(check, "detail", "")
        out.append({"name": str(name), "ok": bool(ok), "detail": str(detail or "")})
    return out


def to_problem(exc: Exception) -> JSONResponse:
    """The problem answer for one exception (the table in the module docstring)."""
    if isinstance(exc, ApiProblem):
        return problem(exc.status, exc.code, exc.detail, **exc.extra)
    if isinstance(exc, NotFoundError):
        return problem(404, "not-found", str(exc))
    if isinstance(exc, ConflictError):
        return problem(409, "conflict", str(exc))
    if isinstance(exc, StorageError):
        # The cause (SQL, a driver's message) is the operator's, in the log; not the client's.
        _log.warning("storage unavailable: %r", exc)
        return problem(503, "unavailable", "storage is unavailable; try again later")
    if isinstance(exc, SpecError):
        errors = [{"loc": ["body", *exc.field.split(".")], "msg": exc.message}]
        return problem(422, "invalid", str(exc), errors=errors)
    if isinstance(exc, InvalidTransitionError):
        return problem(409, "conflict", str(exc))
    if isinstance(exc, PreconditionError):
        return problem(409, "precondition", str(exc))
    if isinstance(exc, NotLeaderError):
        return problem(503, "not-leader", str(exc))
    if isinstance(exc, UnsupportedError):
        return problem(422, "invalid", str(exc), errors=[{"loc": ["body"], "msg": str(exc)}])
    if isinstance(exc, EngineError):
        return problem(503, "unavailable", str(exc))
    if isinstance(exc, AdmissionError):
        return problem(422, "admission", str(exc), checks=_checks(exc))
    if isinstance(exc, ReleaseNotFoundError):
        return problem(404, "not-found", str(exc))
    if isinstance(exc, ReleaseConflictError):
        return problem(409, "conflict", str(exc))
    if isinstance(exc, (ReleaseUnavailableError, ReleaseTrustError)):
        _log.warning("release service unavailable: %r", exc)
        return problem(503, "unavailable", "the release service is unavailable; try again later")
    if isinstance(exc, ReleaseError):
        return problem(422, "invalid", str(exc), errors=[{"loc": ["body"], "msg": str(exc)}])
    if isinstance(exc, (HubGatewayError, BlobError)):
        _log.warning("port unavailable: %r", exc)
        return problem(503, "unavailable", "a backing service is unavailable; try again later")
    _log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal", "internal error")


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": e["msg"]}
        for e in errors
    ]


def install_problem_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return to_problem(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc.errors())
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return problem(422, "invalid", detail, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "invalid" if exc.status_code < 500 else "unavailable")
        return problem(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    families: tuple[type[Exception], ...] = (
        ApiProblem,
        StorageError,
        DomainError,
        EngineError,
        HubGatewayError,
        BlobError,
        ReleaseError,
    )
    for family in families:
        app.add_exception_handler(family, on_error)
    # Anything else is a bug: a 500 problem (Starlette logs it and re-raises it afterwards).
    app.add_exception_handler(Exception, on_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem answers a route may give."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


# Every authenticated route may answer these (400 and 413: a body that does not parse or is over
# its cap, whichever the route).
PROBLEM_RESPONSES = problem_responses(400, 401, 403, 413, 422, 503)
