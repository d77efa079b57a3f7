"""The HTTP API (FastAPI): devices, groups, releases, rollouts, audit and tokens under `/api/v1`,
problem+json errors, bearer tokens with roles. Routes are glue: a dependency, one call into
storage, the engine or the release service, a response model out.

```python
app = create_app(ApiContext(storage, engine=engine, releases=releases, hub=hub))
```
Other packages' routers use `require(Role.VIEWER)` and `get_context` from here.
"""

from __future__ import annotations

from service.api._app import API_PREFIX, create_app
from service.api._context import ApiContext, ApiLimits, ReleasePort
from service.api._deps import ROLE_RANK, get_context, require
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, Problem, problem_responses

__all__ = [
    "API_PREFIX",
    "PROBLEM_RESPONSES",
    "ROLE_RANK",
    "ApiContext",
    "ApiLimits",
    "ApiProblem",
    "Problem",
    "ReleasePort",
    "create_app",
    "get_context",
    "problem_responses",
    "require",
]
