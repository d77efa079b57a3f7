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

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api._context import ApiContext
from service.api._problems import ApiProblem
from service.storage import ApiToken, Role

__all__ = [
    "MAX_LIMIT",
    "ROLE_RANK",
    "After",
    "Context",
    "Limit",
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
After = Annotated[str | None, Query(description="the `next_after` of the previous page")]


def _authenticate(
    credentials: HTTPAuthorizationCredentials | None, context: ApiContext
) -> ApiToken:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiProblem(401, "unauthorized", "an Authorization: Bearer <token> header is needed")
    with context.storage.begin(readonly=True) as uow:
        token = uow.tokens.verify(credentials.credentials)
    if token is None or token.revoked_at is not None:
        raise ApiProblem(401, "unauthorized", "the token is unknown or revoked")
    return token


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
        token = _authenticate(credentials, context)
        if ROLE_RANK[token.role] < ROLE_RANK[role]:
            raise ApiProblem(
                403,
                "forbidden",
                f"token {token.name!r} has role {token.role.value!r}; this needs {role.value!r}",
            )
        return token

    dependency.__name__ = f"require_{role.name.lower()}"
    return dependency
