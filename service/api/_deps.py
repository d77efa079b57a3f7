"""The dependencies every route uses: the context, the authenticated token, paging.

```python
@router.post("/groups/{group_id}")
def put_group(token: Annotated[ApiToken, Depends(require(Role.OPERATOR))],
              ctx: Annotated[ApiContext, Depends(get_context)]) -> GroupOut: ...
```
Roles are ordered: viewer < operator < release-signer < admin; a token may do what its role
and every role before it may. Missing, unknown or revoked tokens are 401; a role too low is 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from service.api._context import ApiContext
from service.api._inputs import INT64_MAX, check_name
from service.api._problems import ApiProblem
from service.storage import ApiToken, Role

__all__ = [
    "MAX_LIMIT",
    "ROLE_RANK",
    "After",
    "Context",
    "Limit",
    "PathId",
    "QueryName",
    "SeqAfter",
    "authenticate_header",
    "ensure_role",
    "get_context",
    "require",
]

MAX_LIMIT = 1000
ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.RELEASE_SIGNER: 2, Role.ADMIN: 3}
_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer <secret>`")


def get_context(request: Request) -> ApiContext:
    """The `ApiContext` the app was created with."""
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
After = Annotated[
    str | None,
    Query(max_length=400, description="the `next_after` of the previous page"),
    AfterValidator(lambda v: v if v is None else check_name(v)),
]
SeqAfter = Annotated[int, Query(ge=0, le=INT64_MAX, description="the last sequence number seen")]
QueryName = Annotated[
    str | None,
    Query(max_length=200),
    AfterValidator(lambda v: v if v is None else check_name(v)),
]
PathId = Annotated[str, Path(min_length=1, max_length=200), AfterValidator(check_name)]
"""An id in a path: no control or format characters (they would reach logs and terminals)."""


def _authenticate(secret: str | None, context: ApiContext) -> ApiToken:
    if not secret:
        raise ApiProblem(401, "unauthorized", "an Authorization: Bearer <token> header is needed")
    with context.storage.begin(readonly=True) as uow:
        token = uow.tokens.verify(secret)
    if token is None or token.revoked_at is not None:
        raise ApiProblem(401, "unauthorized", "the token is unknown or revoked")
    return token


def authenticate_header(context: ApiContext, authorization: str | None) -> ApiToken:
    """The token of an `Authorization: Bearer <secret>` header value; ApiProblem 401 if none.
    The body guard calls it before a request's body is read."""
    scheme, _, secret = (authorization or "").partition(" ")
    return _authenticate(secret.strip() if scheme.lower() == "bearer" else None, context)


def ensure_role(token: ApiToken, role: Role, why: str) -> None:
    """Refuse (403) a request that needs more than its route's role, e.g. an operator route
    whose body touches a production group (only an admin may)."""
    if ROLE_RANK[token.role] < ROLE_RANK[role]:
        raise ApiProblem(
            403,
            "forbidden",
            f"token {token.name!r} has role {token.role.value!r}; {why} needs {role.value!r}",
        )


def require(role: Role) -> Callable[..., ApiToken]:
    """A dependency that returns the caller's token if its role is at least `role`."""

    def dependency(
        context: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiToken:
        secret = None
        if credentials is not None and credentials.scheme.lower() == "bearer":
            secret = credentials.credentials
        token = _authenticate(secret, context)
        if ROLE_RANK[token.role] < ROLE_RANK[role]:
            raise ApiProblem(
                403,
                "forbidden",
                f"token {token.name!r} has role {token.role.value!r}; this needs {role.value!r}",
            )
        return token

    dependency.__name__ = f"require_{role.name.lower()}"
    return dependency
